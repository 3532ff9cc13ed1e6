#!/usr/bin/env python3
"""serve_page.py — the `tandem serve` web page in headless Chromium, driven over
WebDriver (chromium-driver) with the standard library only: load the page of a
server on the tiny SD pipeline, type a prompt and a seed, press Generate, wait
for the image, and check that its PNG is byte for byte the one `tandem generate`
makes with the same parameters. A screenshot of the page is kept as the test's
artifact (in ARTIFACT_DIR, default the temporary folder).

usage: serve_page.py TANDEM_BIN MODEL_DIR
Exits 0 on success, 1 on failure, 77 (skipped) without chromium/chromedriver
or without serve in the build."""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

STEPS = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wd(base, method, path, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}").get("value")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    tandem, model = sys.argv[1], sys.argv[2]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        print("SKIP: chromium and chromium-driver are not installed")
        return 77
    tmp = tempfile.mkdtemp(prefix="tdm-serve-page-")
    srv = drv = None
    try:
        srv = subprocess.Popen([tandem, "serve", "--model", model, "--port", "0", "--steps",
                                str(STEPS), "--quiet"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        line = srv.stdout.readline()
        if not line:
            srv.wait(30)
            if "no HTTP server" in srv.stderr.read():
                print("SKIP: this build has no tandem serve")
                return 77
        if "serving" not in line:
            print("FAIL: the server did not start: %r" % line)
            return 1
        port = int(line.rsplit(":", 1)[1])
        dport = free_port()
        drv = subprocess.Popen([driver, "--port=%d" % dport], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        base = "http://127.0.0.1:%d" % dport
        for _ in range(100):
            try:
                if wd(base, "GET", "/status", timeout=2).get("ready"):
                    break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,800", "--user-data-dir=" + os.path.join(tmp, "profile")]}}}}
        sid = wd(base, "POST", "/session", caps)["sessionId"]
        s = "/session/" + sid
        try:
            wd(base, "POST", s + "/url", {"url": "http://127.0.0.1:%d/" % port})

            def find(css):
                el = wd(base, "POST", s + "/element", {"using": "css selector", "value": css})
                return s + "/element/" + list(el.values())[0]

            for css, text in (("#prompt", "a red cube"), ("#seed", "5")):
                e = find(css)
                wd(base, "POST", e + "/clear", {})
                wd(base, "POST", e + "/value", {"text": text})
            wd(base, "POST", find("#go") + "/click", {})
            status = ""
            for _ in range(600):
                status = wd(base, "POST", s + "/execute/sync", {
                    "script": "return document.getElementById('status').textContent", "args": []})
                if status == "done" or "failed" in status or "Error" in status:
                    break
                time.sleep(0.1)
            if status != "done":
                print("FAIL: the page says %r" % status)
                return 1
            got = wd(base, "POST", s + "/execute/async", {"script": """
                const done = arguments[arguments.length - 1];
                fetch(document.getElementById('image').src).then((r) => r.arrayBuffer()).then((b) => {
                  let s = ''; const u = new Uint8Array(b);
                  for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]);
                  done(btoa(s));
                });""", "args": []})
            params = wd(base, "POST", s + "/execute/sync", {
                "script": "return document.getElementById('params').textContent", "args": []})
            shot = wd(base, "GET", s + "/screenshot")
            art = os.environ.get("ARTIFACT_DIR", tempfile.gettempdir())
            os.makedirs(art, exist_ok=True)
            with open(os.path.join(art, "serve_page.png"), "wb") as f:
                f.write(base64.b64decode(shot))
        finally:
            wd(base, "DELETE", s)
        out = os.path.join(tmp, "cli")
        subprocess.run([tandem, "generate", "--model", model, "--prompt", "a red cube", "--seed", "5",
                        "--steps", str(STEPS), "--out", out, "--quiet"], check=True)
        with open(os.path.join(out, "000000.png"), "rb") as f:
            want = f.read()
        if base64.b64decode(got) != want:
            print("FAIL: the page's image differs from tandem generate's (%d vs %d bytes)"
                  % (len(base64.b64decode(got)), len(want)))
            return 1
        if "Seed: 5" not in params or "a red cube" not in params:
            print("FAIL: parameters shown: %r" % params)
            return 1
        print("ok   the page made tandem generate's image (%d bytes); screenshot in %s"
              % (len(want), os.path.join(os.environ.get("ARTIFACT_DIR", tempfile.gettempdir()), "serve_page.png")))
        return 0
    finally:
        for p in (drv, srv):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
