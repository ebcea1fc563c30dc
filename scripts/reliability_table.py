"""Send every hostile request of the catalogue to a real server and print what came back, as Markdown.

This is where the tables of docs/reliability.md come from. It starts `paca serve` on loopback with the test
suite's fixture models (exported once into a temporary folder; needs torch, as `make test` does) and the
catalogue's limits (`tests/support/hostile.py`: an 8 MiB body limit, 1 s header and 2 s body timeouts, the
other limits at their defaults), sends each probe, and prints the observed status, the start of the error
message, the time to answer, and whether it is the documented answer. Then slow clients and the memory of the
largest admitted request. Exit status 1 if any answer differs from the catalogue.

    .venv/bin/python scripts/reliability_table.py > /tmp/reliability.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import fixture_models
from tests.support.hostile import (
    CLASSIFY,
    LIMITS,
    PROBES,
    Probe,
    check,
    largest_admitted_requests,
    trickled_body,
    unfinished_headers,
)
from tests.support.server import running_server

EXCERPT = 110


def observe(client: httpx.Client, probe: Probe) -> tuple[str, str, float, bool]:
    """(status, error excerpt, milliseconds from sending to the answer, as documented) for one probe."""
    request = probe.request()  # built first: some bodies take a second to encode
    started = time.perf_counter()
    response = client.request(probe.method, probe.path, **request)
    elapsed_ms = (time.perf_counter() - started) * 1000
    try:
        body = response.json()
    except ValueError:
        body = None
    problems = check(probe, response.status_code, body, response.content, response.headers.get("x-request-id"))
    said = body.get("error", "") if isinstance(body, dict) else ""
    if len(said) > EXCERPT:
        said = said[:EXCERPT].rsplit(" ", 1)[0] + " …"
    return str(response.status_code), said, elapsed_ms, not problems


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        artifacts = fixture_models.ensure_artifacts(Path(folder) / "artifacts")
        with running_server(Path(folder), fixture_models.repository_dict(artifacts), env=LIMITS) as server, \
                httpx.Client(base_url=server.url, timeout=60) as client:
            group = None
            for probe in PROBES:
                if probe.group != group:
                    group = probe.group
                    print(f"\n#### {group}\n\n| request | expected | observed | answered in | |\n|---|---|---|---|---|")
                status, said, elapsed_ms, ok = observe(client, probe)
                failures += not ok
                observed = status + (f": {said}" if said else "")
                print(f"| {cell(probe.name)} | {cell(probe.expectation)} | {cell(observed)} | {elapsed_ms:.0f} ms | "
                      f"{'✓' if ok else '✗'} |")
            host, port = server.url.removeprefix("http://").split(":")
            print("\n#### slow clients\n\n| client | expected | observed | after | |\n|---|---|---|---|---|")
            for name, opening in (("headers that never end", b"POST /v1/models/x/classify HTTP/1.1\r\nHost: x\r\n"),
                                  ("a connection that sends nothing", b"")):
                answer, seconds = unfinished_headers(host, int(port), opening)
                ok = answer.startswith(b"HTTP/1.1 408")
                failures += not ok
                print(f"| {name} | 408, closed after the 1 s header timeout | {answer[:12].decode(errors='replace')} "
                      f"| {seconds:.1f} s | {'✓' if ok else '✗'} |")
            answer, seconds = trickled_body(host, int(port), CLASSIFY)
            ok = answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in answer
            failures += not ok
            print(f"| a 100 kB body sent one byte per 0.2 s | 408 after the 2 s body timeout | "
                  f"{answer[:12].decode(errors='replace')} | {seconds:.1f} s | {'✓' if ok else '✗'} |")
            statuses, growth_mib, before, after = largest_admitted_requests(server.url, server.process.pid)
            ok = statuses == [200, 200, 200, 200] and growth_mib < 1536
            failures += not ok
            print("\n#### memory\n\n| request | expected | observed | |\n|---|---|---|---|")
            print(f"| one 6000×6000 PNG (120 kB file, 36 M pixels) to classify, detect, segment and explain | 200s; "
                  f"peak RSS growth < 1.5 GB | {', '.join(map(str, statuses))}; peak RSS +{growth_mib:.0f} MiB "
                  f"(RSS {before['VmRSS'] // 1024} → {after['VmRSS'] // 1024} MiB) | {'✓' if ok else '✗'} |")
    print(f"\n{len(PROBES) + 4} cases, {failures} not as documented", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
