"""``simcompress.workflows.run_demo``: the stages it hands to the runner, and what a rejected recipe skips."""

from __future__ import annotations

from pathlib import Path

from simcompress.workflows.demo import run_demo


def test_stages_in_order_and_the_firmware_stage_needs_a_bundle(tmp_path: Path) -> None:
    seen: list[tuple[str, list[str]]] = []
    lines: list[str] = []

    def runner(stage: str, argv: list[str]) -> tuple[int, float]:
        seen.append((stage, argv))
        return (1 if stage.startswith("3/6") else 0), 0.25  # the firmware recipe fails its gate

    run = run_demo(tmp_path, runner, reference_events=100, events=50, say=lines.append)
    assert [argv[0] for _, argv in seen] == ["simulate", "compress", "compress", "generate", "generate", "generate", "validate"]
    assert run.compress_rc == {"combined": 0, "firmware": 1} and list(run.students) == ["combined"]
    # the shipped spline flow is validated beside the GAN teacher and its students
    assert list(run.samples) == ["teacher", "combined", "flow"] and any("firmware skipped" in ln for ln in lines)
    assert seen[5][1][:3] == ["generate", "--model", "ds1-photons-flow"] and "flow=" in " ".join(seen[6][1])
    assert run.log[1] == {"stage": "2/6 compress: combined recipe", "command": "simcompress " + " ".join(seen[1][1]),
                          "exit_code": 0, "seconds": 0.2}
