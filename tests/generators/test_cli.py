"""``simcompress train``: end to end on a tiny simulated sample, and bad input."""

from __future__ import annotations

import json

from simcompress.cli import main
from simcompress.generators import load_generator


def test_train_cli_writes_loadable_bundle(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "kind: flow\nmodel: {n_blocks: 1, hidden: [16], n_groups: 8}\nsteps: 6\nbatch_size: 32\n"
        "monitor_every: 3\ncheckpoint_every: 3\nmonitor_events: 100\n"
    )
    out = tmp_path / "m"
    log = tmp_path / "log.jsonl"
    rc = main(["train", "flow", "--reference-events", "300", "--config", str(recipe), "--out", str(out),
               "--no-progress", "--log", str(log)])
    assert rc == 0
    gen = load_generator(out)
    assert gen.kind == "flow"
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["data"]["n_events"] == 300 and "simulate" in card["training"]["data"]["source"]
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [3, 6]
    assert (out / "checkpoints" / "state.safetensors").is_file()


def test_train_cli_bad_input_exits_2(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: gan\nstpes: 3\n")
    assert main(["train", "gan", "--reference-events", "10", "--config", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "stpes" in capsys.readouterr().err
    assert main(["train", "gan", "--out", str(tmp_path / "o")]) == 2  # neither --data nor --reference-events
    assert main(["train", "vae", "--reference-events", "10", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_train_cli_from_root_file(tmp_path, tiny_ref):
    from simcompress.showers.io import write_showers

    ref = write_showers(tmp_path / "ref.root", tiny_ref)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: gan\nmodel: {latent_dim: 4, hidden: [16], critic_hidden: [16]}\nsteps: 2\nbatch_size: 16\nn_critic: 1\n")
    out = tmp_path / "g"
    assert main(["train", "gan", "--data", str(ref), "--config", str(recipe), "--out", str(out), "--no-progress"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["data"]["source"] == str(ref) and card["training"]["data"]["n_events"] == 600
    assert (out / "discriminator.safetensors").is_file()
    assert main(["train", "gan", "--data", str(tmp_path / "missing.root"), "--out", str(tmp_path / "x")]) == 2
