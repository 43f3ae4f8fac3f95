//! Filtering by level and by namespace (Twisted's `LogLevelFilterPredicate`, whose
//! `setLogLevelForNamespace` this mirrors).
//!
//! A [`NamespaceFilter`] has a default level and directives `namespace=level`
//! (`torsion::net=debug`, `poetry=warn`). The directive with the longest namespace that is a
//! prefix of the event's namespace wins, a prefix matching only on a `.` or `::` boundary
//! (`poetry` covers `poetry.server` and `poetry::client`, not `poetryfoo`). The event's
//! namespace is its `log_namespace` field when it has one (events of
//! `torsion::log::Logger`), else its target (plain `tracing` events, torsion's own).
//!
//! Invariant: a `Logger` event's namespace is only known from its fields, so its callsite is
//! never cached as enabled or disabled except by level: [`Filter::callsite_enabled`] says
//! "sometimes" for [`LOGGER_TARGET`] and the decision is made per event in
//! [`Filter::event_enabled`].

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

use torsion::log::LOGGER_TARGET;

use super::LogSetupError;

/// The level and namespace filter (see the module doc).
#[derive(Clone, Debug)]
pub(crate) struct NamespaceFilter {
    default: LevelFilter,
    /// Longest namespace first, so the first match is the longest prefix.
    directives: Vec<(String, LevelFilter)>,
    /// The most verbose level any directive or the default lets through.
    max: LevelFilter,
}

impl NamespaceFilter {
    /// A filter at `level` with `directives` (`namespace=level`).
    ///
    /// # Errors
    ///
    /// [`LogSetupError::BadFilter`] for a directive without `=`, with an empty namespace or
    /// an unknown level.
    pub(crate) fn new(level: Level, directives: &[String]) -> Result<Self, LogSetupError> {
        let default = LevelFilter::from_level(level);
        let mut parsed = Vec::with_capacity(directives.len());
        for directive in directives {
            let bad = |reason: String| LogSetupError::BadFilter {
                directive: directive.clone(),
                reason,
            };
            let Some((namespace, level)) = directive.split_once('=') else {
                return Err(bad(
                    "expected NAMESPACE=LEVEL, e.g. poetry.server=debug".into()
                ));
            };
            let namespace = namespace.trim();
            if namespace.is_empty() {
                return Err(bad("the namespace is empty".into()));
            }
            let level = level.trim();
            let level = if level.eq_ignore_ascii_case("off") {
                LevelFilter::OFF
            } else {
                LevelFilter::from_level(super::LogConfig::parse_level(level).map_err(bad)?)
            };
            parsed.push((namespace.to_owned(), level));
        }
        // Stable: of two directives for the same namespace, the later one wins below.
        parsed.reverse();
        parsed.sort_by_key(|(namespace, _)| std::cmp::Reverse(namespace.len()));
        let max = parsed
            .iter()
            .map(|(_, level)| *level)
            .fold(default, std::cmp::max);
        Ok(NamespaceFilter {
            default,
            directives: parsed,
            max,
        })
    }

    /// The level in force for `namespace`.
    pub(crate) fn level_for(&self, namespace: &str) -> LevelFilter {
        self.directives
            .iter()
            .find(|(prefix, _)| covers(prefix, namespace))
            .map_or(self.default, |(_, level)| *level)
    }

    /// Whether an event at `level` in `namespace` passes.
    pub(crate) fn passes(&self, level: &Level, namespace: &str) -> bool {
        *level <= self.level_for(namespace)
    }
}

/// Whether the directive `prefix` covers `namespace`: equal, or a prefix ending on a `.` or
/// `::` boundary.
fn covers(prefix: &str, namespace: &str) -> bool {
    match namespace.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => {
            rest.starts_with('.')
                || rest.starts_with("::")
                || prefix.ends_with('.')
                || prefix.ends_with("::")
        }
        None => false,
    }
}

impl<S> Filter<S> for NamespaceFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        if metadata.target() == LOGGER_TARGET {
            *metadata.level() <= self.max
        } else {
            self.passes(metadata.level(), metadata.target())
        }
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if *metadata.level() > self.max {
            Interest::never()
        } else if metadata.target() == LOGGER_TARGET {
            Interest::sometimes()
        } else if self.passes(metadata.level(), metadata.target()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        if event.metadata().target() != LOGGER_TARGET {
            return true;
        }
        let mut namespace = FindNamespace(None);
        event.record(&mut namespace);
        let namespace = namespace.0.as_deref().unwrap_or(LOGGER_TARGET);
        self.passes(event.metadata().level(), namespace)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }
}

/// Finds the `log_namespace` field of an event.
struct FindNamespace(Option<String>);

impl Visit for FindNamespace {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log_namespace" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(level: Level, directives: &[&str]) -> NamespaceFilter {
        let directives: Vec<String> = directives.iter().map(|d| d.to_string()).collect();
        NamespaceFilter::new(level, &directives).unwrap()
    }

    #[test]
    fn the_longest_prefix_wins() {
        let f = filter(
            Level::INFO,
            &["poetry=warn", "poetry.server=debug", "torsion::net=error"],
        );
        assert!(!f.passes(&Level::INFO, "poetry.client"));
        assert!(f.passes(&Level::WARN, "poetry.client"));
        assert!(f.passes(&Level::DEBUG, "poetry.server"));
        assert!(f.passes(&Level::DEBUG, "poetry.server.protocol"));
        assert!(!f.passes(&Level::WARN, "torsion::net::tcp"));
        assert!(f.passes(&Level::INFO, "torsion::defer"));
        assert!(!f.passes(&Level::DEBUG, "torsion::defer"));
        assert_eq!(f.max, LevelFilter::DEBUG);
    }

    #[test]
    fn prefixes_match_on_dot_and_double_colon_boundaries_only() {
        assert!(covers("poetry", "poetry"));
        assert!(covers("poetry", "poetry.server"));
        assert!(covers("poetry", "poetry::server"));
        assert!(!covers("poetry", "poetryfoo"));
        assert!(!covers("poetry.server", "poetry"));
        assert!(covers("poetry.", "poetry.server"));
    }

    #[test]
    fn levels_and_off_parse_and_bad_directives_are_named() {
        let f = filter(Level::INFO, &["noisy=off", "quiet=critical", "Loud=DEBUG"]);
        assert!(!f.passes(&Level::ERROR, "noisy"));
        assert!(f.passes(&Level::ERROR, "quiet"));
        assert!(!f.passes(&Level::WARN, "quiet"));
        assert!(f.passes(&Level::DEBUG, "Loud"));
        for bad in ["poetry", "=info", "poetry=loud"] {
            let err = NamespaceFilter::new(Level::INFO, &[bad.to_string()]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(bad), "{text}");
        }
    }

    #[test]
    fn a_later_directive_for_the_same_namespace_wins() {
        let f = filter(Level::INFO, &["poetry=warn", "poetry=debug"]);
        assert!(f.passes(&Level::DEBUG, "poetry"));
    }
}
