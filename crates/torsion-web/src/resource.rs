//! Resources (Twisted's `twisted.web.resource`): what a URL path leads to, and what it
//! answers.
//!
//! A request's path is walked segment by segment from the [`Site`](crate::Site)'s root:
//! each [`Resource`] that is not a leaf gives the child for the next segment
//! ([`child`](Resource::child), which [`Node`] answers from the children put into it), and
//! the resource the walk ends on [`render`](Resource::render)s the request. `render`
//! dispatches on the method: a resource writes `render_get` (HEAD is answered from it,
//! without the body), `render_post`, …, and lists them in
//! [`allowed_methods`](Resource::allowed_methods); a method it does not answer gets 405
//! with `Allow`, a path that leads nowhere 404.
//!
//! Invariant: a resource never writes to a connection itself; it answers through the
//! [`Request`] it is given, which keeps pipelined responses in order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use http::{Method, StatusCode};
use torsion::{Deferred, Failure};

use crate::request::Request;

/// What rendering gives back (Twisted's `render` returning bytes or `NOT_DONE_YET`).
pub enum Render {
    /// The whole body: it is written with its `Content-Length` and the request finished.
    Body(Vec<u8>),
    /// The resource answers later, through [`Request::write`] and [`Request::finish`]
    /// (Twisted's `NOT_DONE_YET`).
    Later,
    /// The body, once the Deferred fires (a failure answers 500 and is logged); an `async`
    /// block becomes one with [`Render::future`].
    Deferred(Deferred<Vec<u8>>),
}

impl Render {
    /// The body of an `async` block, run on the reactor.
    pub fn future<F>(future: F) -> Render
    where
        F: Future<Output = Result<Vec<u8>, Failure>> + 'static,
    {
        Render::Deferred(torsion::spawn(future))
    }

    /// A text body.
    pub fn text(text: impl Into<String>) -> Render {
        Render::Body(text.into().into_bytes())
    }
}

impl From<&str> for Render {
    fn from(text: &str) -> Render {
        Render::Body(text.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Render {
    fn from(body: Vec<u8>) -> Render {
        Render::Body(body)
    }
}

/// Something a URL leads to (Twisted's `IResource`).
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion_web::{Render, Request, Resource};
///
/// /// Says hello to GET (and so to HEAD); anything else is 405.
/// struct Hello;
///
/// impl Resource for Hello {
///     fn is_leaf(&self) -> bool {
///         true
///     }
///     fn render_get(&self, _request: &Rc<Request>) -> Render {
///         Render::text("hello world")
///     }
/// }
/// ```
pub trait Resource: 'static {
    /// Whether the walk stops here, whatever is left of the path (Twisted's `isLeaf`): the
    /// rest is in [`Request::postpath`].
    fn is_leaf(&self) -> bool {
        false
    }

    /// The child for the path segment `name` (percent-decoded; empty for a trailing `/`),
    /// or `None` for 404 (Twisted's `getChildWithDefault` and `getChild`).
    fn child(&self, name: &str, request: &Request) -> Option<Rc<dyn Resource>> {
        let _ = (name, request);
        None
    }

    /// Whether this resource reads request bodies as they arrive (no Twisted equivalent:
    /// Twisted buffers every body, its #4688). `false` by default: the body is collected
    /// whole, up to [`SiteConfig::max_body`](crate::SiteConfig::max_body), before
    /// [`render`](Resource::render). `true`: `render` is called as soon as the head is in
    /// and reads the body with [`Request::deliver_body`], at its own pace and with no
    /// size limit but its own.
    fn streams_body(&self, request: &Request) -> bool {
        let _ = request;
        false
    }

    /// Answers the request (Twisted's `render`): by default, dispatches on the method.
    fn render(&self, request: &Rc<Request>) -> Render {
        let method = request.method().clone();
        if method == Method::GET || method == Method::HEAD {
            // Straight there (its default answers 405): no list made per request.
            return self.render_get(request);
        } else if self.allowed_methods().contains(&method) {
            return match method {
                Method::POST => self.render_post(request),
                Method::PUT => self.render_put(request),
                Method::DELETE => self.render_delete(request),
                _ => self.render_other(request),
            };
        }
        not_allowed(request, &self.allowed_methods())
    }

    /// The methods this resource answers (GET, and so HEAD, unless overridden), for 405's
    /// `Allow` and for the dispatch of the other methods: GET and HEAD always go to
    /// [`render_get`](Resource::render_get), whose default answers 405. List every
    /// `render_*` you write.
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::GET, Method::HEAD]
    }

    /// GET, and HEAD without the body (Twisted's `render_GET`, `render_HEAD`).
    fn render_get(&self, request: &Rc<Request>) -> Render {
        not_allowed(request, &self.allowed_methods())
    }

    /// POST (Twisted's `render_POST`).
    fn render_post(&self, request: &Rc<Request>) -> Render {
        not_allowed(request, &self.allowed_methods())
    }

    /// PUT.
    fn render_put(&self, request: &Rc<Request>) -> Render {
        not_allowed(request, &self.allowed_methods())
    }

    /// DELETE.
    fn render_delete(&self, request: &Rc<Request>) -> Render {
        not_allowed(request, &self.allowed_methods())
    }

    /// Any other method listed in [`allowed_methods`](Resource::allowed_methods).
    fn render_other(&self, request: &Rc<Request>) -> Render {
        not_allowed(request, &self.allowed_methods())
    }
}

/// 405 with `Allow` (Twisted's `UnsupportedMethod`).
fn not_allowed(request: &Request, allowed: &[Method]) -> Render {
    let mut names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    names.dedup();
    request.set_response_code(StatusCode::METHOD_NOT_ALLOWED);
    request.set_header("allow", &names.join(", "));
    request.set_header("content-type", "text/plain; charset=utf-8");
    Render::text(format!(
        "405 Method Not Allowed: {} is not one of {}\n",
        request.method(),
        names.join(", ")
    ))
}

/// 404 for any path under it (Twisted's `NoResource`).
pub struct NotFound;

impl Resource for NotFound {
    fn is_leaf(&self) -> bool {
        true
    }

    fn render(&self, request: &Rc<Request>) -> Render {
        request.set_response_code(StatusCode::NOT_FOUND);
        request.set_header("content-type", "text/plain; charset=utf-8");
        Render::text("404 Not Found: no resource here\n")
    }
}

/// A resource that holds children by name (Twisted's plain `Resource()` with
/// `putChild`), and answers its own path with `index` if given, else 404.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use torsion_web::{Node, Render, Request, Resource};
///
/// struct Text(&'static str);
/// impl Resource for Text {
///     fn render_get(&self, _request: &Rc<Request>) -> Render {
///         Render::text(self.0)
///     }
/// }
///
/// let root = Node::new();
/// root.put_child("about", Rc::new(Text("about us")));
/// root.put_child("", Rc::new(Text("the front page"))); // "/"
/// ```
#[derive(Default)]
pub struct Node {
    children: RefCell<HashMap<String, Rc<dyn Resource>>>,
}

impl Node {
    /// A node without children.
    pub fn new() -> Node {
        Node::default()
    }

    /// Puts `resource` at path segment `name` (Twisted's `putChild`); `""` is the node's
    /// own path with a trailing slash.
    pub fn put_child(&self, name: &str, resource: Rc<dyn Resource>) {
        self.children
            .borrow_mut()
            .insert(name.to_string(), resource);
    }

    /// The child at `name`, if one was put there.
    pub fn get_child(&self, name: &str) -> Option<Rc<dyn Resource>> {
        self.children.borrow().get(name).cloned()
    }
}

impl Resource for Node {
    fn child(&self, name: &str, _request: &Request) -> Option<Rc<dyn Resource>> {
        self.get_child(name)
    }

    fn streams_body(&self, request: &Request) -> bool {
        self.get_child("")
            .is_some_and(|index| index.streams_body(request))
    }

    fn render(&self, request: &Rc<Request>) -> Render {
        match self.get_child("") {
            Some(index) => index.render(request),
            None => NotFound.render(request),
        }
    }
}
