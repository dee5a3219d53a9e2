"""A TCP listener on 127.0.0.1:28599 that accepts connections and never answers: an OTLP
collector that hangs. Stops by itself after 300 s."""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 28599)); s.listen(1024)
conns = []
end = time.time() + 300
s.settimeout(1)
while time.time() < end:
    try:
        c, _ = s.accept(); conns.append(c)
    except socket.timeout:
        pass
