"""Scale: 100,000 resources through plan, apply (instant script), a drift pass and a 10% teardown.

Marked slow: not part of `make test`; `make bench` runs it (RECONCILER_SCALE sets the size). It
checks correctness at that size, not speed (speed is measured by `make bench` against peers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import make_project, run_cli

SIZE = int(os.environ.get("RECONCILER_SCALE", "100000"))
FILES = max(1, SIZE // 100)
PORTS = 4

pytestmark = pytest.mark.slow

INSTANT = textwrap.dedent("""\
    #!/bin/sh
    # instant, and no forks: spread the resources over the test's few HTTP servers by their number
    n=${RESOURCE_ID##*-}
    set -- $PORTS
    shift $(( 1$n % 4 ))
    echo "http://127.0.0.1:$1/$RESOURCE_ID"
""")
TEARDOWN = "#!/bin/sh\necho \"$RESOURCE_ID\" >> \"$CONTROL/teardowns.log\"\n"


def write_fleet(desired: Path) -> None:
    for f in range(FILES):
        docs = [f"resource_id: t{f:05d}-{i:03d}\nowner: team-{i % 9}\nregion: eu-west-1\ndeploy_ref: v{i % 5}\n"
                f"params: {{size: small}}\n" for i in range(SIZE // FILES)]
        (desired / f"part-{f:05d}.yaml").write_text("---\n".join(docs))


@pytest.fixture
def servers(tmp_path):
    """A few HTTP servers on 127.0.0.1 that answer 200 to anything, in their own processes."""
    code = textwrap.dedent("""
        import http.server, socketserver, sys
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
                self.wfile.write(b"ok")
            def log_message(self, *a): pass
        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            request_queue_size = 1024
        s = S(("127.0.0.1", 0), H); print(s.server_address[1], flush=True); s.serve_forever()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(PORTS)]
    ports = [proc.stdout.readline().strip() for proc in procs]
    yield " ".join(ports)
    for proc in procs:
        proc.kill()
        proc.wait()


def test_scale_plan_apply_drift_teardown(tmp_path, servers):
    project = make_project(tmp_path, provision=INSTANT, teardown=TEARDOWN)
    (project / "provision" / "targets.yaml").write_text("pass_env: [CONTROL, PORTS]\n")  # scripts get only these
    write_fleet(project / "desired")
    env = {"PORTS": servers}

    plan = json.loads(run_cli(project, "plan", "-o", "json", timeout=300, **env).stdout)
    assert plan["summary"]["create"] == SIZE

    done = run_cli(project, "apply", "--yes", "--parallelism", "64", timeout=3600, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(run_cli(project, "status", "-o", "json", timeout=300).stdout)
    assert len(counts) == SIZE and {row["status"] for row in counts} == {"active"}

    checked = run_cli(project, "check", "--concurrency", "200", timeout=600)
    assert f"Checked {SIZE}: {SIZE} healthy, 0 failed" in checked.stdout, checked.stdout[-2000:]

    removed = sorted((project / "desired").glob("*.yaml"))[: FILES // 10]
    for path in removed:
        path.unlink()
    done = run_cli(project, "apply", "--yes", "--parallelism", "64", timeout=3600, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(run_cli(project, "status", "-o", "json", timeout=300).stdout)
    gone = [row for row in rows if row["status"] == "deleted"]
    assert len(gone) == (FILES // 10) * (SIZE // FILES)
    assert len((project / "control" / "teardowns.log").read_text().split()) == len(gone)
    assert run_cli(project, "plan", "--detailed-exitcode", timeout=300, **env).returncode == 0
