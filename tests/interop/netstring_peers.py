"""Twisted netstring peers for torsion's interop tests (crates/torsion-cli/tests/twisted_interop.rs,
examples/tests/twisted_servers.rs):
the transform service's RPC, after Dave Peticolas' twisted-client-6 (TransformProxy) and
twisted-server-1/transformedpoetry.py.

    netstring_peers.py client PORT CASE
        Calls the transform service on 127.0.0.1:PORT with Twisted's NetstringReceiver,
        and prints what came back, one line per answer ("ANSWER n <first 40 bytes>") and
        "CLOSED" when the server closed, then "DONE". CASE is one of:
          pipelined   three requests in one write: cummingsify, upper, cummingsify
          limit       one request of exactly 99,999 bytes (NetstringReceiver.MAX_LENGTH)
          over        one request of 100,000 bytes, over the limit
          malformed   bytes that are not a netstring ("12x:abc,")
        Exits 0.

    netstring_peers.py server
        A Twisted transform service (cummingsify: lower case; upper) on 127.0.0.1 on a
        free port, printed as "PORT n": one netstring "NAME.TEXT" in, the transformed text
        out, then the connection is closed. Runs until killed.
"""

import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import NetstringReceiver


def say(*words):
    print(*words, flush=True)


def request(name, text):
    payload = name + b"." + text
    return b"%d:%s," % (len(payload), payload)


CASES = {
    "pipelined": request(b"cummingsify", b"Hello World")
    + request(b"upper", b"pipelined poem")
    + request(b"cummingsify", b"THE END"),
    # "upper." and the text: 99,999 bytes in all.
    "limit": request(b"upper", b"x" * (99_999 - len(b"upper."))),
    "over": request(b"upper", b"x" * (100_000 - len(b"upper."))),
    "malformed": b"12x:abc,",
}


class TransformClient(NetstringReceiver):
    MAX_LENGTH = 200_000

    def connectionMade(self):
        self.transport.write(CASES[self.factory.case])

    def stringReceived(self, answer):
        say("ANSWER", len(answer), answer[:40].decode("latin-1"))

    def connectionLost(self, reason):
        say("CLOSED")
        say("DONE")
        reactor.stop()


class TransformServer(NetstringReceiver):
    def stringReceived(self, request):
        name, _, text = request.partition(b".")
        if name == b"cummingsify":
            self.sendString(text.lower())
        elif name == b"upper":
            self.sendString(text.upper())
        self.transport.loseConnection()


def main(argv):
    if argv[1:2] == ["client"] and len(argv) == 4 and argv[3] in CASES:
        factory = protocol.ClientFactory()
        factory.protocol = TransformClient
        factory.case = argv[3]
        factory.clientConnectionFailed = lambda _c, reason: (
            say("FAILED", reason.getErrorMessage()),
            reactor.stop(),
        )
        reactor.connectTCP("127.0.0.1", int(argv[2]), factory)
        reactor.callLater(20, lambda: (say("FAILED", "timed out"), reactor.stop()))
    elif argv[1:2] == ["server"] and len(argv) == 2:
        factory = protocol.ServerFactory()
        factory.protocol = TransformServer
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        say("PORT", port.getHost().port)
    else:
        sys.exit(__doc__)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
