"""A real SMTP server for ferry's tests: aiosmtpd on 127.0.0.1, STARTTLS
required (or implicit TLS with --implicit-tls), AUTH required with one
user, every accepted message written to a Maildir. With --reject-rcpt ADDR
it refuses that recipient for good (550), as a relay does a closed mailbox.
Prints "ready" once it listens; stops on SIGTERM. Started and stopped (by
PID) by tests/smtpd.rs."""

import argparse
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--reject-rcpt", default=None)
    a = p.parse_args()

    class Handler(Mailbox):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if a.reject_rcpt and address.lower() == a.reject_rcpt.lower():
                return "550 5.1.1 user unknown"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == a.user
            and auth_data.password.decode() == a.password
        )
        return AuthResult(success=ok, handled=False)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    kwargs = dict(hostname="127.0.0.1", port=a.port, authenticator=authenticate, auth_required=True)
    if a.implicit_tls:
        # TLS from the first byte; aiosmtpd only counts STARTTLS as TLS for AUTH.
        kwargs.update(ssl_context=ctx, auth_require_tls=False)
    else:
        kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
    controller = Controller(Handler(a.maildir), **kwargs)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
