"""A twisted.web Site for torsion-web's Agent to talk to (crates/torsion-web/tests/agent_interop.rs).

Listens on 127.0.0.1, port 0, prints the port on a line of its own, then serves until
its standard input closes:

  /fixed          b"fixed body", with its Content-Length
  /chunked        three writes without a Content-Length: chunked under HTTP/1.1
  /gzip           a large text through EncodingResourceWrapper + GzipEncoderFactory
                  (gzip when the request accepts it, chunked)
  /redirect       302 to /fixed
  /see-other      303 to /fixed
  /port           the client's port: the same for requests on one kept connection
  /echo           POST: the body it got, and how it was framed
  /close          b"closing" with Connection: close
"""

import sys

from twisted.internet import reactor, stdio
from twisted.protocols.basic import LineReceiver
from twisted.web import resource, server, util


class Fixed(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"fixed body"


class Chunked(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        def later():
            request.write(b"first, ")
            request.write(b"second, ")
            request.write(b"third")
            request.finish()

        reactor.callLater(0.01, later)
        return server.NOT_DONE_YET


def big_text():
    return b"".join(b"line %d of a text worth compressing\n" % i for i in range(20000))


class Big(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        text = big_text()
        for i in range(0, len(text), 8192):
            request.write(text[i : i + 8192])
        request.finish()
        return server.NOT_DONE_YET


class Port(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return str(request.getClientAddress().port).encode()


class Echo(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        chunked = request.getHeader(b"transfer-encoding") is not None
        request.setHeader(b"x-framing", b"chunked" if chunked else b"length")
        return request.content.read()


class Close(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"connection", b"close")
        return b"closing"


class SeeOther(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        request.setResponseCode(303)
        request.setHeader(b"location", b"/fixed")
        return b""


class Quit(LineReceiver):
    def connectionLost(self, reason):
        if reactor.running:
            reactor.stop()


root = resource.Resource()
root.putChild(b"fixed", Fixed())
root.putChild(b"chunked", Chunked())
root.putChild(b"gzip", resource.EncodingResourceWrapper(Big(), [server.GzipEncoderFactory()]))
root.putChild(b"redirect", util.Redirect(b"/fixed"))
root.putChild(b"see-other", SeeOther())
root.putChild(b"port", Port())
root.putChild(b"echo", Echo())
root.putChild(b"close", Close())

port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
sys.stdout.write("%d\n" % port.getHost().port)
sys.stdout.flush()
stdio.StandardIO(Quit())
reactor.callLater(120, reactor.stop)
reactor.run()
