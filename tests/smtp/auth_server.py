#!/usr/bin/env python3
"""An SMTP server for Safehand's mail tests that insists on credentials, like a school's relay.

It offers STARTTLS with the given certificate, refuses everything but EHLO, NOOP, QUIT and
STARTTLS until TLS is up, offers AUTH PLAIN and LOGIN only over TLS, refuses MAIL until the
client has authenticated as USER with PASSWORD, and writes accepted mail to a maildir.

    python3 auth_server.py --listen 127.0.0.1:2587 --cert server.pem --key server.key \
        --user relay@school.sch.uk --password-file pw.txt --maildir DIR

Every AUTH attempt is logged to stderr ("auth ok USER" / "auth refused USER"), never the
password. It prints "listening HOST:PORT" on stdout when ready (port 0 picks a free one) and
runs until killed.
"""

import argparse
import asyncio
import hmac
import mailbox
import ssl
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Authenticator:
    def __init__(self, user: str, password: bytes):
        self.user = user
        self.password = password

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        ok = hmac.compare_digest(user.encode(), self.user.encode()) and hmac.compare_digest(
            auth_data.password, self.password
        )
        print(f"auth {'ok' if ok else 'refused'} {mechanism} {user}", file=sys.stderr, flush=True)
        return AuthResult(success=ok, handled=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--cert", required=True, help="PEM certificate chain for STARTTLS")
    parser.add_argument("--key", required=True, help="PEM private key for STARTTLS")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    with open(args.password_file, "rb") as f:
        password = f.read().rstrip(b"\r\n")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    mailbox.Maildir(args.maildir, create=True)
    handler = Mailbox(args.maildir)
    authenticator = Authenticator(args.user, password)

    def session() -> SMTP:
        return SMTP(
            handler,
            hostname="localhost",
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=authenticator,
        )

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(session, host, int(port))
        bound = server.sockets[0].getsockname()
        print(f"listening {bound[0]}:{bound[1]}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
