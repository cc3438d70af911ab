"""The runbook as on-call reads it at 3 a.m.: numbered steps in order, root's commands with sudo,
one hash-size advice per kernel generation that agrees with the code, a check and a rollback."""

import os
import re

from conntrack_zbx import boot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(REPO, "docs", "runbook.md")) as f:
    RUNBOOK = f.read()


def test_steps_are_numbered_once_and_in_order():
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", RUNBOOK, re.M)]
    assert numbers == list(range(1, 9)), numbers
    assert not re.search(r"^## \d+[a-z]\.", RUNBOOK, re.M)  # no "2b"


def test_commands_that_need_root_say_sudo():
    """Reading the entry table (top, clean, namespaces, cat of the table) and changing the kernel
    (tune --apply, sysctl -w, the hashsize file) are root's; a line that does it without sudo
    would fail for on-call with a permission error."""
    needs_root = re.compile(r"conntrack-zbx (top|clean|namespaces)\b(?!.*--file)|tune .*--apply|sysctl -w|"
                            r"cat /proc/net/nf_conntrack|> ?/sys/module|tee /sys/module")
    for block in re.findall(r"```\n(.*?)```", RUNBOOK, re.S):
        for line in block.splitlines():
            command = line.split("#")[0]
            if needs_root.search(command):
                assert "sudo " in command, line


def test_one_hash_size_advice_per_kernel_generation_matching_the_code():
    assert "| 5.15 and later" in RUNBOOK and "| before 5.15" in RUNBOOK
    assert boot.recommended_buckets(524288, (5, 15)) == 524288  # "nf_conntrack_max"
    assert boot.recommended_buckets(524288, (4, 18)) == 524288 // 4  # "nf_conntrack_max / 4"
    assert "| `nf_conntrack_max` |" in RUNBOOK and "| `nf_conntrack_max / 4` |" in RUNBOOK


def test_it_says_how_to_check_the_fix_and_how_to_roll_it_back():
    check = RUNBOOK[RUNBOOK.index("## 6. Check it worked"):RUNBOOK.index("## 7.")]
    assert "drop" in check and "{$CONNTRACK.USAGE.WARN}" in check
    rollback = RUNBOOK[RUNBOOK.index("## 8. Roll back"):]
    assert ".bak" in rollback and "nf_conntrack_max=OLD_VALUE" in rollback
    with open(os.path.join(REPO, "conntrack_zbx", "tune.py")) as f:
        assert '".bak"' in f.read()  # what the rollback relies on is what tune writes
