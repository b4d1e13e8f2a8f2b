"""scripts/tes-compliance says why it leaves a test file out rather than its tag: the
count of other files that share the tag, which it gives, must be the suite's."""

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.worker_helpers import ROOT

SCRIPT = ROOT / "scripts" / "tes-compliance"
# Where .ci/run looks for the suite's snapshot: TES_SUITE, beside the clone, the workplace's.
_CANDIDATES = [
    os.environ.get("TES_SUITE", ""),
    ROOT.parent / "shared" / "vendor" / "tes-compliance-suite",
    "/work/shared/vendor/tes-compliance-suite",
]
SUITE = next((Path(c) for c in _CANDIDATES if c and (Path(c) / "tests").is_dir()), Path(_CANDIDATES[1]))


def _tags(path: Path) -> list[str]:
    return yaml.safe_load(path.read_text()).get("tags") or []


def test_the_count_of_files_sharing_the_left_out_files_tag_is_the_suites():
    if not (SUITE / "tests").is_dir():
        pytest.skip(f"no suite snapshot at {SUITE}")
    text = SCRIPT.read_text()
    left_out = re.search(r'^LEFT_OUT="(.*)"$', text, re.M).group(1).split()
    said = re.search(r"its only tag \((\w+)\) is also that of (\d+)", " ".join(text.split()))
    assert said, "the script names the tag and how many other files share it"
    tag, count = said.group(1), int(said.group(2))
    assert all(_tags(SUITE / "tests" / name) == [tag] for name in left_out)
    sharing = [path.name for path in sorted((SUITE / "tests").glob("*.yml")) if tag in _tags(path) and path.name not in left_out]
    assert len(sharing) == count, sharing
