#!/usr/bin/env python3
"""Start-up A/B: process start to the first /readyz 200, interleaved runs of each binary.

    bench/startup.py BINARY [BINARY...]    (RUNS=10; a NONE route, --threads 1, loopback only)
"""
import subprocess, sys, time, urllib.request, tempfile, os, socket, statistics
def free():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
res={b:[] for b in sys.argv[1:]}
for _ in range(int(os.environ.get("RUNS", "10"))):
    for b in sys.argv[1:]:
        port,admin=free(),free()
        cfg=tempfile.NamedTemporaryFile("w",suffix=".yaml",delete=False)
        cfg.write(f'listen: 127.0.0.1:{port}\nadmin: {{ listen: 127.0.0.1:{admin} }}\ntelemetry: {{ accessLog: "off" }}\nroutes:\n  - name: open\n    authorizerType: NONE\n    upstream: {{ url: "http://127.0.0.1:9" }}\n'); cfg.close()
        t0=time.monotonic()
        p=subprocess.Popen([b,"serve","--threads","1","--config",cfg.name],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz",timeout=1).status==200: break
            except Exception: time.sleep(0.001)
        res[b].append((time.monotonic()-t0)*1000)
        p.terminate(); p.wait(); os.unlink(cfg.name)
for b,v in res.items(): print(f"{b}: median {statistics.median(v):.1f} ms, min {min(v):.1f}, max {max(v):.1f}")
