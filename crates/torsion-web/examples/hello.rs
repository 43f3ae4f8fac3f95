//! The benchmark's hello server: answers `hello world` to `GET /` on 127.0.0.1:PORT, with
//! the access log off.
//!
//! Run with `cargo run --release -p torsion-web --example hello -- 8080`.

use std::rc::Rc;

use torsion::net::tcp::ListenOptions;
use torsion::{Failure, Reactor};
use torsion_web::{Render, Request, Resource, Site, SiteConfig};

/// `hello world`, for any path.
struct Hello;

impl Resource for Hello {
    fn is_leaf(&self) -> bool {
        true
    }

    fn render_get(&self, request: &Rc<Request>) -> Render {
        request.set_header("content-type", "text/plain");
        Render::text("hello world")
    }
}

fn main() -> Result<(), Failure> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Failure::msg("usage: hello PORT"))?;
    let reactor = Reactor::new()?;
    let config = SiteConfig {
        access_log: false,
        ..SiteConfig::default()
    };
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    reactor.listen_tcp_with(port, Site::with_config(Rc::new(Hello), config), options)?;
    reactor.run()
}
