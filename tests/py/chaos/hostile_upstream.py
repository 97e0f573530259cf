"""A hostile Ollama upstream on raw sockets (optionally TLS) for the upstream-framing suite.

It answers corral's polls (`/api/tags`, `/api/ps`, `/api/version`) correctly and each
`POST /api/chat` the way the request asks: the user message carries a nonce and a
`[[mode:NAME]]` marker. Every POST that arrives is counted per nonce (even one it never
answers), so a test can prove that no request reached the upstream twice, and the number of
the connection it came on is kept, so a test can see whether a connection was reused.
"""

import json
import re
import socket
import ssl
import threading
import time
from collections import Counter

MODEL = "qwen3:8b"
EVIL = b'{"model":"qwen3:8b","message":{"role":"assistant","content":"EVIL"},"done":true}'

HUGE = 200 * 1024 * 1024

TAGS = json.dumps({"models": [{"name": MODEL, "model": MODEL, "size": 5_000_000_000,
                               "details": {"family": "qwen3", "parameter_size": "8.2B"}}]}).encode()


def answer_json(nonce, pad=0):
    body = {"model": MODEL, "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": f"echo {nonce}" + "." * pad},
            "done": True, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2}
    return json.dumps(body, separators=(",", ":")).encode()


def head(status="200 OK", headers=(), length=None):
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ok(body):
    return head(length=len(body)) + body


class HostileUpstream:
    def __init__(self, tls: ssl.SSLContext | None = None, force: str | None = None):
        self.tls = tls
        self.force = force  # answers every POST this way, whatever it asks
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https://localhost' if tls else 'http://127.0.0.1'}:{self.port}"
        self.lock = threading.Lock()
        self.posts = Counter()          # nonce -> POSTs received
        self.post_conn = {}             # nonce -> connection number of its last POST
        self.sent = Counter()           # nonce -> answer bytes the client took (huge_answer)
        self.conns = 0
        self.socks = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def total_posts(self):
        with self.lock:
            return sum(self.posts.values())

    def duplicates(self):
        with self.lock:
            return {n: c for n, c in self.posts.items() if n is not None and c > 1}

    def close_connections(self):
        """Hangs up every open connection, as an upstream that closes idle ones does."""
        for s in list(self.socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed.set()
        self.listener.close()
        for s in list(self.socks):
            try:
                s.close()
            except OSError:
                pass

    stop = close

    # ------------------------------------------------------------------ plumbing

    def _accept(self):
        while not self.closed.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
                number = self.conns
            threading.Thread(target=self._serve, args=(raw, number), daemon=True).start()

    def _serve(self, raw, number):
        try:
            sock = self.tls.wrap_socket(raw, server_side=True) if self.tls else raw
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.socks.append(sock)
        sock.settimeout(30)
        buf = b""
        served = 0
        try:
            while not self.closed.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head_bytes, buf = buf.split(b"\r\n\r\n", 1)
                lines = head_bytes.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if method == "GET":
                    buf = self._drop(sock, buf, length)
                    body = {"/api/tags": TAGS, "/api/ps": b'{"models":[]}',
                            "/api/version": b'{"version":"0.12.6"}'}.get(path)
                    sock.sendall(ok(body) if body is not None else head("404 Not Found", length=0))
                    continue
                # POST: the start of the body says what to do, before all of it is read.
                while len(buf) < min(length, 4096):
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                text = buf[:4096].decode("latin-1", "replace")
                nonce = (re.search(r"nonce-[0-9a-f]+", text) or [None])[0] if "nonce-" in text else None
                mode = self.force or (re.search(r"\[\[mode:([a-z_0-9]+)\]\]", text) or [None, "ok"])[1]
                with self.lock:
                    self.posts[nonce] += 1
                    self.post_conn[nonce] = number
                if mode == "early_413":
                    sock.sendall(ok(b'{"error":"request entity too large"}')
                                 .replace(b"200 OK", b"413 Payload Too Large")
                                 .replace(b"Content-Type", b"Connection: close\r\nContent-Type"))
                    sock.shutdown(socket.SHUT_WR)
                    self._drop(sock, buf, length)  # a lingering close: read what still comes
                    return
                buf = self._drop(sock, buf, length)
                served += 1
                keep = self._answer(sock, mode, nonce, served)
                if not keep:
                    return
        except OSError:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _drop(sock, buf, length):
        """Reads and discards the rest of a body of `length` bytes; returns what follows."""
        while len(buf) < length:
            chunk = sock.recv(min(1 << 20, length - len(buf)))
            if not chunk:
                return b""
            buf += chunk
        return buf[length:]

    # ------------------------------------------------------------------ behaviours

    def _answer(self, sock, mode, nonce, served):
        """Writes the answer for `mode`; False when the connection is to be closed."""
        body = answer_json(nonce)
        if mode == "ok":
            sock.sendall(ok(body))
        elif mode == "tls_extra":
            # The whole answer is exactly 8,192 bytes; an answer nobody asked for follows
            # in the same write (one TLS record).
            pad = 8192 - len(ok(answer_json(nonce)))
            padded = ok(answer_json(nonce, pad=pad))
            while len(padded) > 8192:  # the length's own digits grew
                pad -= len(padded) - 8192
                padded = ok(answer_json(nonce, pad=pad))
            assert len(padded) == 8192, len(padded)
            sock.sendall(padded + ok(EVIL))
        elif mode == "cl_plus":
            sock.sendall(head(headers=[f"Content-Length: +{len(body)}"]) + body)
            return False
        elif mode in ("chunk_plus", "chunk_space"):
            size = f"+{len(body):x}" if mode == "chunk_plus" else f" {len(body):x} "
            sock.sendall(head(headers=["Transfer-Encoding: chunked"])
                         + f"{size}\r\n".encode() + body + b"\r\n0\r\n\r\n")
            return False
        elif mode == "big_head":
            sock.sendall(head(headers=["X-Big: " + "a" * (127 * 1024)], length=len(body)) + body)
        elif mode == "bare_lf":
            sock.sendall(head(headers=["Transfer-Encoding: chunked"])
                         + f"{len(body):x}\n".encode() + body + b"\n0\n\n")
            time.sleep(5)  # holds the connection: a lenient reader would wait here
            return False
        elif mode == "te_gzip":
            # Not chunked, so the length must be ignored and the body read until close.
            sock.sendall(head(headers=["Transfer-Encoding: gzip"], length=10) + body)
            time.sleep(0.5)
            return False
        elif mode == "garbage":
            sock.sendall(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}")
            return False
        elif mode == "close_reused":
            if served > 1:
                return False  # read the whole request, then hang up without a word
            sock.sendall(ok(body))
        elif mode == "status_422":
            err = b'{"error":"invalid tool schema"}'
            sock.sendall(head("422 Unprocessable Entity", length=len(err)) + err)
        elif mode == "status_500":
            err = b'{"error":"runner crashed"}'
            sock.sendall(head("500 Internal Server Error", length=len(err)) + err)
        elif mode == "trickle":
            sock.sendall(head(length=len(body)))
            for b in body:
                if self.closed.is_set():
                    return False
                sock.sendall(bytes([b]))
                time.sleep(0.5)
        elif mode == "huge_answer":
            # 200 MiB announced, written 1 MiB at a time while corral takes it.
            size, block = HUGE, b"." * (1 << 20)
            sock.sendall(head(length=size))
            for _ in range(size // len(block)):
                sock.sendall(block)
                with self.lock:
                    self.sent[nonce] += len(block)
        elif mode == "big_answer":
            big = answer_json(nonce, pad=2 * 1024 * 1024)
            sock.sendall(ok(big))
        elif mode == "done_spaced":
            lines = [
                {"model": MODEL, "created_at": "2026-01-01T00:00:00Z",
                 "message": {"role": "assistant", "content": f"echo {nonce}"}, "done": False},
            ]
            last = ('{ "eval_count" : 2, "prompt_eval_count": 3, "done_reason": "stop",'
                    ' "message": {"role": "assistant", "content": ""},'
                    f' "model": "{MODEL}", "done" :  true }}')
            out = b"".join(json.dumps(x).encode() + b"\n" for x in lines) + last.encode() + b"\n"
            sock.sendall(head(headers=["Content-Type: application/x-ndjson"], length=len(out))
                         .replace(b"Content-Type: application/json\r\n", b"") + out)
        else:
            raise ValueError(mode)
        return True
