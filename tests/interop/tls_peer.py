"""A Twisted TLS peer for torsion's interop tests (crates/torsion/tests/tls_interop.rs).

    tls_peer.py client PORT CA_PEM HOSTNAME MESSAGE
        Connects to 127.0.0.1:PORT with optionsForClientTLS(HOSTNAME, trustRoot=CA_PEM):
        the server's certificate is verified against the authority and the name. Sends
        MESSAGE and a newline, waits for the same line to come back, then closes
        (close_notify). Prints HANDSHAKE, PEER-CN, VERSION, ECHO and LOST lines.

    tls_peer.py server CERT_PEM KEY_PEM
        Listens on 127.0.0.1 on a free port (printed as "PORT n"), accepts one
        connection, echoes its first line and closes with loseConnection (close_notify).

Exits 0 when the exchange went as described, 1 otherwise (with a FAILED line).
"""

import sys

from twisted.internet import endpoints, protocol, reactor, ssl
from twisted.internet.interfaces import IHandshakeListener
from zope.interface import implementer

RESULT = {"ok": False}


def say(*words):
    print(*words, flush=True)


def stop():
    if reactor.running:
        reactor.stop()


@implementer(IHandshakeListener)
class EchoClient(protocol.Protocol):
    def __init__(self, message):
        self.message = message
        self.buffer = b""

    def connectionMade(self):
        self.transport.write(self.message + b"\n")

    def handshakeCompleted(self):
        say("HANDSHAKE")
        cert = self.transport.getPeerCertificate()
        say("PEER-CN", cert.get_subject().CN)
        say("VERSION", self.transport.getHandle().get_protocol_version_name())

    def dataReceived(self, data):
        self.buffer += data
        if b"\n" in self.buffer:
            line = self.buffer.split(b"\n", 1)[0]
            say("ECHO", line.decode())
            RESULT["ok"] = line == self.message
            self.transport.loseConnection()

    def connectionLost(self, reason):
        say("LOST", reason.type.__name__, str(reason.value).replace("\n", " "))
        if not RESULT["ok"]:
            say("FAILED", "no echo before the connection ended")
        stop()


class EchoServer(protocol.Protocol):
    def __init__(self):
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        if b"\n" in self.buffer:
            line = self.buffer.split(b"\n", 1)[0]
            say("GOT", line.decode())
            self.transport.write(line + b"\n")
            RESULT["ok"] = True
            self.transport.loseConnection()

    def connectionLost(self, reason):
        say("LOST", reason.type.__name__)
        if not RESULT["ok"]:
            say("FAILED", "the connection ended before a line came")
        stop()


def client(port, ca_file, hostname, message):
    with open(ca_file, "rb") as f:
        ca = ssl.Certificate.loadPEM(f.read())
    options = ssl.optionsForClientTLS(hostname, trustRoot=ca)
    endpoint = endpoints.wrapClientTLS(
        options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", int(port))
    )
    d = endpoint.connect(
        protocol.Factory.forProtocol(lambda: EchoClient(message.encode()))
    )

    def failed(reason):
        say("FAILED", reason.type.__name__, str(reason.value).replace("\n", " "))
        stop()

    d.addErrback(failed)


def server(cert_file, key_file):
    with open(cert_file, "rb") as c, open(key_file, "rb") as k:
        identity = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
    factory = protocol.Factory.forProtocol(EchoServer)
    port = reactor.listenSSL(0, factory, identity.options(), interface="127.0.0.1")
    say("PORT", port.getHost().port)


def main(argv):
    if argv[1:2] == ["client"] and len(argv) == 6:
        client(*argv[2:])
    elif argv[1:2] == ["server"] and len(argv) == 4:
        server(*argv[2:])
    else:
        sys.exit(__doc__)
    reactor.callLater(15, lambda: (say("FAILED", "timed out"), stop()))
    reactor.run()
    sys.exit(0 if RESULT["ok"] else 1)


if __name__ == "__main__":
    main(sys.argv)
