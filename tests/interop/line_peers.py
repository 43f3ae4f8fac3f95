"""Twisted LineReceiver peers for torsion's interop tests (crates/torsion/tests/twisted_interop.rs).

Line i of an exchange is b"line %d " followed by i % 97 times b"x", each ended by CRLF.

    line_peers.py send PORT COUNT SEED
        Connects to 127.0.0.1:PORT and writes COUNT lines split at random byte boundaries
        (random.Random(SEED), pieces of 1 to 64 bytes, one piece per reactor turn), and
        reads them back with a LineReceiver: each must come back in order, exactly.
        Prints "OK COUNT", or "FAILED ..." and exits 1.

    line_peers.py echo-server
        A LineReceiver (MAX_LENGTH 16384) echoing every line, on 127.0.0.1 on a free port
        printed as "PORT n". Runs until killed.

    line_peers.py long PORT
        Opens two connections to 127.0.0.1:PORT. The first sends a 20,000-byte line: it
        must be closed without an echo ("CLOSED-LONG"). Then the second sends "still here"
        and must get it back ("ECHO still here"). Exits 0 when both happened.
"""

import random
import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver

EXIT = {"code": 1}


def say(*words):
    print(*words, flush=True)


def line(i):
    return b"line %d " % i + b"x" * (i % 97)


def stop():
    if reactor.running:
        reactor.stop()


class Sender(LineReceiver):
    MAX_LENGTH = 16384

    def connectionMade(self):
        rng = random.Random(self.factory.seed)
        wire = b"".join(line(i) + b"\r\n" for i in range(self.factory.count))
        pieces = []
        at = 0
        while at < len(wire):
            n = rng.randint(1, 64)
            pieces.append(wire[at : at + n])
            at += n
        self.pieces = iter(pieces)
        self.next_echo = 0
        self.send_piece()

    def send_piece(self):
        piece = next(self.pieces, None)
        if piece is not None:
            self.transport.write(piece)
            reactor.callLater(0, self.send_piece)

    def lineReceived(self, got):
        want = line(self.next_echo)
        if got != want:
            say("FAILED", "echo %d: got %r, expected %r" % (self.next_echo, got[:40], want[:40]))
            self.transport.loseConnection()
            return
        self.next_echo += 1
        if self.next_echo == self.factory.count:
            say("OK", self.factory.count)
            EXIT["code"] = 0
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if EXIT["code"] != 0:
            say("FAILED", "closed after %d echoes: %s" % (self.next_echo, reason.getErrorMessage()))
        stop()


class Echo(LineReceiver):
    MAX_LENGTH = 16384

    def lineReceived(self, got):
        self.sendLine(got)


class Long(LineReceiver):
    def connectionMade(self):
        self.factory.connected(self)

    def lineReceived(self, got):
        say("ECHO", got.decode())
        self.factory.echoed = True
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.lost(self)


class LongFactory(protocol.ClientFactory):
    protocol = Long

    def __init__(self, port):
        self.port = port
        self.conns = []
        self.echoed = False
        self.long_closed = False

    def start(self):
        for _ in range(2):
            reactor.connectTCP("127.0.0.1", self.port, self)

    def connected(self, conn):
        self.conns.append(conn)
        if len(self.conns) == 2:
            self.conns[0].transport.write(b"y" * 20000 + b"\r\n")

    def lost(self, conn):
        if conn is self.conns[0] and not self.long_closed:
            self.long_closed = True
            say("CLOSED-LONG")
            self.conns[1].sendLine(b"still here")
        elif conn is self.conns[1]:
            if self.long_closed and self.echoed:
                EXIT["code"] = 0
            stop()


def main(argv):
    if argv[1:2] == ["send"] and len(argv) == 5:
        factory = protocol.ClientFactory()
        factory.protocol = Sender
        factory.count, factory.seed = int(argv[3]), int(argv[4])
        factory.clientConnectionFailed = lambda _c, r: (say("FAILED", r.getErrorMessage()), stop())
        reactor.connectTCP("127.0.0.1", int(argv[2]), factory)
    elif argv[1:2] == ["echo-server"] and len(argv) == 2:
        factory = protocol.ServerFactory()
        factory.protocol = Echo
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        say("PORT", port.getHost().port)
        EXIT["code"] = 0
    elif argv[1:2] == ["long"] and len(argv) == 3:
        reactor.callWhenRunning(LongFactory(int(argv[2])).start)
    else:
        sys.exit(__doc__)
    reactor.callLater(30, lambda: (say("FAILED", "timed out"), stop()))
    reactor.run()
    sys.exit(EXIT["code"])


if __name__ == "__main__":
    main(sys.argv)
