"""Reference echo server for bench/run_network.sh: Twisted on the epoll reactor.

Usage: python twisted_echo.py PORT   (listens on 127.0.0.1:PORT)

Accepted connections get TCP_NODELAY. The listen backlog is 1024 (Twisted's
default is 50), the same as tokio's TcpListener::bind, so the accept-rate and
idle-connection cases compare the servers rather than their backlog settings.
"""

import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


class EchoFactory(protocol.Factory):
    protocol = Echo


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: twisted_echo.py PORT\n")
        sys.exit(2)
    port = int(sys.argv[1])
    reactor.listenTCP(port, EchoFactory(), backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
