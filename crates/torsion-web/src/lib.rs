//! torsion's `twisted.web`: an HTTP/1.1 server of [`Resource`]s for torsion's reactor, and
//! its client, the [`Agent`].
//!
//! A [`Site`] is the factory: listen with it on any stream endpoint (TCP, UNIX, TLS). Each
//! connection's channel parses requests with [`parse`] (httparse underneath, with the
//! strictness of RFC 9112 and the fixes of Twisted's request-smuggling CVEs), walks the
//! path from the site's root to a resource, and writes the responses in order, pipelined
//! or not, with keep-alive, chunked bodies both ways, `Expect: 100-continue`, the limits
//! (431, 414, 413) and the timeouts (408, idle close).
//!
//! The [`Agent`] requests over a persistent [`Pool`] of connections, gives each
//! [`Response`] at its head and streams its body with back-pressure; [`RedirectAgent`] and
//! [`ContentDecoderAgent`] wrap it (see [`agent`]).
//!
//! | torsion-web | Twisted |
//! |---|---|
//! | [`Site`], [`SiteConfig`] | `server.Site` |
//! | [`Resource`], [`Node`] (`put_child`), [`NotFound`] | `resource.Resource`, `putChild`, `NoResource` |
//! | [`Request`] (`write`, `finish`, `set_response_code`, `set_header`, `redirect`, `notify_finish`) | `server.Request` |
//! | [`Render`] (`Body`, `Later`, `Deferred`, `future`) | `render` returning bytes or `NOT_DONE_YET` |
//! | [`StaticFile`] (types, index files, listings, ranges, 304s, streamed bodies) | `static.File` |
//! | [`Request::register_producer`] | `Request.registerProducer` |
//! | [`Resource::streams_body`], [`Request::deliver_body`], [`RequestBodyReceiver`] | none: Twisted buffers every request body (its #4688) |
//! | [`Agent`] (`request`), [`HttpClient`] (`fetch`), [`AgentError`] | `client.Agent`, `IAgent` |
//! | [`Response`] (`collect_body`, `deliver_body`), [`agent::BodyReceiver`], [`agent::BodyControl`] | `IResponse`, `readBody`, `deliverBody` |
//! | [`Body`], [`agent::BodyProducer`], [`agent::FileBodyProducer`] | `IBodyProducer`, `FileBodyProducer` |
//! | [`Pool`] (`close_cached_connections`) | `HTTPConnectionPool` |
//! | [`RedirectAgent`], [`ContentDecoderAgent`] | `RedirectAgent`, `ContentDecoderAgent` + `GzipDecoder` |
//! | [`get_page`] | `getPage` (removed from Twisted) |
//! | [`parse`] | `http.HTTPChannel`'s parsing, sans I/O |
//!
//! Not here yet: on the client side, proxies (`ProxyAgent`), cookies (`CookieAgent`),
//! `BrowserLikeRedirectAgent`, and pipelining (one request at a time per connection).
//!
//! Invariant: resources answer only through their [`Request`]; the connection's channel
//! alone writes to the transport, in request order.

pub mod agent;
mod body;
mod channel;
mod date;
pub mod parse;
mod request;
mod resource;
mod site;
mod static_file;

pub use agent::{
    Agent, AgentError, Body, ContentDecoderAgent, HttpClient, Pool, RedirectAgent, Response,
    get_page,
};
pub use body::{BODY_BACKLOG, RequestBodyError, RequestBodyReceiver};
pub use channel::MAX_PIPELINED;
pub use request::{Request, RequestDone};
pub use resource::{Node, NotFound, Render, Resource};
pub use site::{Site, SiteConfig};
pub use static_file::StaticFile;
