"""STARTTLS on the relay as the world sees it (run in the sink's namespace).

    relay_tls.py probe HOST PORT NAME CERT
        EHLO, STARTTLS verified against CERT (the certificate the relay should
        serve, as its only trust anchor) for NAME, EHLO again; prints one JSON
        line: whether STARTTLS and AUTH were offered before TLS, AUTH after
        it, and the served certificate's SHA-256. Exit 1 when STARTTLS is not
        offered or the handshake fails.
    relay_tls.py hold HOST PORT NAME CERT READY GO
        The same handshake, then touch READY and send NOOP every 10 s (the
        relay closes a session idle for command_timeout) until the file GO
        exists (at most 15 minutes): then NOOP and QUIT on the same session.
        Prints one JSON line; exit 1 when the session was dropped meanwhile.

Standard library only: the test controller's python3 runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import ssl
import sys
import time


def _handshake(host: str, port: int, name: str, cert: str) -> tuple[smtplib.SMTP, dict]:
    """Connect, EHLO, STARTTLS (verified for NAME against CERT), EHLO."""
    smtp = smtplib.SMTP(host, port, timeout=20)
    smtp.ehlo("sink.test")
    before = {"starttls": smtp.has_extn("starttls"), "auth_before_tls": smtp.has_extn("auth")}
    if not before["starttls"]:
        smtp.close()
        print(json.dumps({"port": port, **before}))
        sys.exit(1)
    context = ssl.create_default_context(cafile=cert)
    # smtplib verifies the name it connected to (an address here): the relay's name instead.
    smtp._host = name
    smtp.starttls(context=context)
    served = smtp.sock.getpeercert(binary_form=True)
    smtp.ehlo("sink.test")
    return smtp, {"port": port, **before, "auth_after_tls": smtp.has_extn("auth"),
                  "sha256": hashlib.sha256(served).hexdigest(), "tls": smtp.sock.version()}


def main(argv: list[str]) -> int:
    """Run the probe or hold mode named by argv[1]."""
    mode, host, port, name, cert = argv[1], argv[2], int(argv[3]), argv[4], argv[5]
    try:
        smtp, found = _handshake(host, port, name, cert)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as ex:
        print(json.dumps({"port": port, "error": f"{type(ex).__name__}: {ex}"}))
        return 1
    if mode == "hold":
        ready, go = argv[6], argv[7]
        with open(ready, "w"):
            pass
        last = time.monotonic()
        deadline = time.monotonic() + 900
        found["noops"] = 0
        try:
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.5)
                if time.monotonic() - last >= 10:
                    smtp.noop()
                    found["noops"] += 1
                    last = time.monotonic()
            found["noop_after"] = smtp.noop()[0]
            smtp.quit()
        except (OSError, smtplib.SMTPException) as ex:
            found["error"] = f"{type(ex).__name__}: {ex}"
            print(json.dumps(found))
            return 1
    else:
        smtp.quit()
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
