# Headless Chromium (Debian's `chromium`) for the browser test of the validation report
# (tests/validation/test_browser.py: opens report.html, checks console errors, image loading and
# that the verdict is on the first screen, keeps a screenshot in build/test-artifacts/). As root
# it installs the package when missing (and says so); otherwise it says why not, and the test
# skips with that reason.
.PHONY: chromium-deps
chromium-deps:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium-deps: $$(chromium --version 2>/dev/null | head -1)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "chromium-deps: chromium missing; installing Debian package chromium (apt-get; about 400 MB installed with its dependencies)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    && echo "chromium-deps: installed $$(chromium --version 2>/dev/null | head -1)"; \
	else \
	  echo "chromium-deps: chromium missing and not root (uid $$(id -u)): cannot apt-get install chromium;" \
	       "the validation report's browser test will skip"; \
	fi

TEST_DEPS += chromium-deps
