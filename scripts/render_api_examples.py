"""Run the example commands of README.md and docs/api.md against a real server and write their real answers.

An example in those files is a region

    <!-- example -->
    ```bash
    curl -s ... http://127.0.0.1:8000/...
    ```
    ```json
    (the answer)
    ```
    <!-- /example -->

This script starts `paca serve` with the embedded demo repository (the models `make run` serves, exported
from the committed weights by `paca demo ensure`), runs each example's curl command as written (only the
address changes to the server's), and puts the answer in the json block: long lists cut to their first
items, long strings (RLE counts, base64 PNGs) to their start, floats to 4 digits, each cut marked "…".

    .venv/bin/python scripts/render_api_examples.py           # rewrite the examples
    .venv/bin/python scripts/render_api_examples.py --check   # exit 1, with a diff, if the docs drifted

`--check` compares the answers with tolerance (floats within 0.01 relative or 0.5 absolute for pixel
coordinates), so thread-count noise in the last digits is not drift; a different label, count or field is.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from service.settings import DEFAULT_REPOSITORY  # noqa: E402
from tests.support.server import running_server  # noqa: E402

DOCUMENTS = (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "api.md")
DOCUMENTED_URL = "http://127.0.0.1:8000"
REGION = re.compile(r"<!-- example -->\n```bash\n(?P<command>.*?)\n```\n```json\n(?P<answer>.*?)\n```\n"
                    r"<!-- /example -->", re.S)
ITEMS = 4
CHARS = 24
ELLIPSIS = "…"


@dataclass
class Example:
    document: Path
    command: str
    answer: str
    span: tuple[int, int]  # of the answer text in the document


def examples(document: Path) -> Iterator[Example]:
    text = document.read_text()
    for match in REGION.finditer(text):
        yield Example(document, match["command"], match["answer"], match.span("answer"))


def run_command(command: str, url: str) -> Any:
    """The example's curl command, as written but for the address, from the repository root."""
    words = shlex.split(command.replace("\\\n", " ").replace(DOCUMENTED_URL, url))
    if words[0] != "curl":
        raise SystemExit(f"examples must be curl commands: {command!r}")
    result = subprocess.run(words, cwd=REPO_ROOT, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{command!r} failed: {result.stderr.decode(errors='replace')}")
    return json.loads(result.stdout)


def abbreviate(value: Any) -> Any:
    """What the docs show: the shape of the answer with its first items, every cut marked."""
    if isinstance(value, dict):
        return {key: abbreviate(item) for key, item in value.items()}
    if isinstance(value, list):
        shown = [abbreviate(item) for item in value[:ITEMS]]
        return [*shown, ELLIPSIS] if len(value) > ITEMS else shown
    if isinstance(value, str) and len(value) > CHARS:
        return value[:CHARS] + ELLIPSIS
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return value


def render(value: Any) -> str:
    """Compact where it fits (one line per object up to 110 characters), indented where it does not."""
    def write(item: Any, indent: int) -> str:
        flat = json.dumps(item, ensure_ascii=False)
        if len(flat) + indent <= 110 or not isinstance(item, dict | list) or not item:
            return flat
        pad = " " * (indent + 2)
        if isinstance(item, dict):
            inner = [f"{pad}{json.dumps(key)}: {write(entry, indent + 2)}" for key, entry in item.items()]
            return "{\n" + ",\n".join(inner) + "\n" + " " * indent + "}"
        inner = [pad + write(entry, indent + 2) for entry in item]
        return "[\n" + ",\n".join(inner) + "\n" + " " * indent + "]"

    return write(value, 0)


def differences(documented: Any, observed: Any, where: str = "$") -> list[str]:
    """Where the documented answer and the observed one (both abbreviated) differ beyond float noise."""
    if isinstance(documented, dict) and isinstance(observed, dict):
        found = [f"{where}: keys {sorted(documented)} ≠ {sorted(observed)}"] if documented.keys() != observed.keys() \
            else []
        for key in documented.keys() & observed.keys():
            found += differences(documented[key], observed[key], f"{where}.{key}")
        return found
    if isinstance(documented, list) and isinstance(observed, list):
        if len(documented) != len(observed):
            return [f"{where}: {len(documented)} items ≠ {len(observed)}"]
        return [d for index, pair in enumerate(zip(documented, observed, strict=True))
                for d in differences(*pair, f"{where}[{index}]")]
    numbers = (int, float)
    if isinstance(documented, numbers) and isinstance(observed, numbers) and not isinstance(documented, bool):
        tolerance = max(0.01 * abs(observed), 0.5 if where.split(".")[-1].startswith("box") else 0.002)
        return [] if abs(documented - observed) <= tolerance else [f"{where}: {documented} ≠ {observed}"]
    return [] if documented == observed else [f"{where}: {documented!r} ≠ {observed!r}"]


def ensure_demo_artifacts() -> None:
    launcher = "import sys; from service.cli import main; sys.argv[0] = 'paca'; main()"
    subprocess.run([sys.executable, "-c", launcher, "demo", "ensure"], cwd=REPO_ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    parser.add_argument("documents", nargs="*", type=Path, default=list(DOCUMENTS),
                        help="Markdown files with examples (default: README.md and docs/api.md)")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed: the examples are curl commands")
    ensure_demo_artifacts()
    drift: list[str] = []
    with tempfile.TemporaryDirectory() as folder, running_server(Path(folder), DEFAULT_REPOSITORY) as server:
        for document in args.documents:
            text = document.read_text()
            found = list(examples(document))
            for example in reversed(found):  # from the end, so earlier spans stay valid
                observed = abbreviate(run_command(example.command, server.url))
                if args.check:
                    try:
                        documented = json.loads(example.answer)
                    except ValueError:
                        documented = None
                    for problem in differences(documented, observed) if documented is not None else ["not JSON"]:
                        drift.append(f"{document.name}: {example.command.splitlines()[0]}: {problem}")
                else:
                    start, end = example.span
                    text = text[:start] + render(observed) + text[end:]
            if not args.check:
                document.write_text(text)
                print(f"{document.name}: {len(found)} examples written")
    for line in drift:
        print(line, file=sys.stderr)
    if drift:
        print("the docs' examples differ from the server's answers; run scripts/render_api_examples.py",
              file=sys.stderr)
    return 1 if drift else 0


if __name__ == "__main__":
    raise SystemExit(main())
