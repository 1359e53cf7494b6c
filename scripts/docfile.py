"""Write a generated document, or check that the committed one is current
(shared by the docs generators in this folder)."""
from __future__ import annotations

import os
import sys


def write_or_check(text: str, output: str, root: str, command: str, check: bool, stdout: bool) -> int:
    """Exit status: 0 written/current/printed, 1 when ``check`` finds it stale."""
    rel = os.path.relpath(output, root)
    if stdout:
        sys.stdout.write(text)
        return 0
    if check:
        try:
            with open(output, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{rel} is out of date; run `{command}`", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {rel}")
    return 0
