"""kushi with the password file and ACL file an operator already has from Mosquitto.

Point kushi at the same two files ``mosquitto.conf`` names as ``password_file``
and ``acl_file``::

    mosquitto_passwd -c -b passwd alice 'wonder land'
    cat > acl <<'ACL'
    user alice
    topic readwrite alice/#
    pattern read devices/%c/cmd
    ACL
    python examples/mosquitto_files.py --password-file passwd --acl-file acl --tcp :1883

The password file holds ``$7$`` (PBKDF2-SHA512, Mosquitto 2) or ``$6$``
(SHA512, Mosquitto 1) entries; the ACL file uses Mosquitto's ``user``,
``topic [read|write|readwrite|deny]`` and ``pattern`` lines with ``%c`` and
``%u``. See ``kushi.hooks.mosquitto`` for the exact rules and the few places
kushi is stricter than Mosquitto.

Send SIGHUP to re-read both files (a file that cannot be read or parsed keeps
the rules loaded before; it never opens access). The broker logs ``listening
tcp HOST:PORT`` once it is open and stops gracefully on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal

import kushi
from kushi.hooks.mosquitto import MosquittoHook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--password-file", help="a file written by mosquitto_passwd")
    parser.add_argument("--acl-file", help="a Mosquitto ACL file")
    parser.add_argument("--allow-anonymous", action="store_true",
                        help="let clients without a username in (Mosquitto 2's allow_anonymous)")
    parser.add_argument("--tcp", default=":1883", help="listen address HOST:PORT (port 0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    # Reads both files now: a missing or malformed file stops here, before anyone connects.
    try:
        hook = MosquittoHook(args.password_file, args.acl_file, allow_anonymous=args.allow_anonymous)
    except kushi.errors.ConfigurationError as error:
        parser.error(str(error))
    signal.signal(signal.SIGHUP, lambda signum, frame: hook.reload())

    server = kushi.Server(kushi.Options(sys_interval=0))
    server.add_hook(hook)
    server.add_listener(kushi.TCP("tcp", args.tcp))
    server.run()   # blocks; SIGINT or SIGTERM closes it gracefully


if __name__ == "__main__":
    main()
