//! Where a master's workers list is: a URL template, checked once when the
//! configuration is read and expanded for every master.

use std::fmt;

use thiserror::Error;

/// The template used when the configuration names none: Buildbot's own
/// data API on the master's web port.
///
/// It asks for every field: `?field=name&field=connected_to&...` would
/// make the answer smaller, but a Buildbot that lacks one of the fields
/// (those before `paused` existed) answers 400 to it. Operators whose
/// masters all have them may put the fields in their own template.
pub const DEFAULT_URL_TEMPLATE: &str = "http://{fqdn}:{http_port}/api/v2/workers";

/// The placeholders a template may use, for error messages.
const KNOWN: &str = "{fqdn}, {http_port}, {nickname}, {masterid}";

/// A parsed URL template such as [`DEFAULT_URL_TEMPLATE`].
///
/// Placeholders are `{fqdn}`, `{http_port}`, `{nickname}` and
/// `{masterid}`; there is no escape for a literal brace, which a URL
/// cannot hold unencoded anyway.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Fqdn,
    HttpPort,
    Nickname,
    MasterId,
}

/// What a template is expanded with: the parts of a master row it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterAddress<'a> {
    /// slavealloc's id of the master (`slavealloc_domain::MasterId`).
    pub masterid: i32,
    /// Its unique short name.
    pub nickname: &'a str,
    /// Its host name.
    pub fqdn: &'a str,
    /// Its web port; 0 (the schema's "none") is refused by templates that
    /// use `{http_port}`.
    pub http_port: i32,
}

/// Why a template was refused; every variant quotes the template.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    /// A `{name}` that is not one of the four placeholders.
    #[error("URL template {template:?}: unknown placeholder {{{name}}} (known: {KNOWN})")]
    UnknownPlaceholder {
        /// The template.
        template: String,
        /// What stood between the braces.
        name: String,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("URL template {template:?}: unmatched {brace:?} at byte {at}")]
    UnmatchedBrace {
        /// The template.
        template: String,
        /// The brace.
        brace: char,
        /// Its byte offset.
        at: usize,
    },
    /// Expanded for a sample master, it is not an http or https URL.
    #[error("URL template {template:?} does not make an http(s) URL: {reason}")]
    NotHttp {
        /// The template.
        template: String,
        /// What is wrong with the sample expansion.
        reason: String,
    },
}

/// Why a template could not be expanded for one master: the master row,
/// not the template, is at fault (the template was checked at parse time).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExpandError {
    /// The template uses `{http_port}` and the master has none (0) or one
    /// outside 1..=65535.
    #[error("master {nickname} has no usable http port ({port})")]
    NoHttpPort {
        /// The master's nickname.
        nickname: String,
        /// The port it has.
        port: i32,
    },
    /// The master's fqdn is not a host name (so it could change the URL's
    /// meaning, e.g. with a `/` or `@`).
    #[error("master {nickname}'s fqdn {fqdn:?} is not a host name")]
    BadFqdn {
        /// The master's nickname.
        nickname: String,
        /// Its fqdn.
        fqdn: String,
    },
    /// The expanded URL does not parse as an http(s) URL.
    #[error("master {nickname}'s poll URL {url:?} is not an http(s) URL: {reason}")]
    NotHttp {
        /// The master's nickname.
        nickname: String,
        /// The expanded URL.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

impl UrlTemplate {
    /// Parses and checks a template: every placeholder known, and the
    /// result an http(s) URL with a host for a sample master, so that a
    /// typo fails when the configuration is read rather than at every poll.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template.char_indices();
        while let Some((at, c)) = rest.next() {
            match c {
                '{' => {
                    let unmatched = || TemplateError::UnmatchedBrace {
                        template: template.to_owned(),
                        brace: '{',
                        at,
                    };
                    let close = template[at..].find('}').ok_or_else(unmatched)? + at;
                    let name = &template[at + 1..close];
                    if name.contains('{') {
                        return Err(unmatched());
                    }
                    let field = match name {
                        "fqdn" => Field::Fqdn,
                        "http_port" => Field::HttpPort,
                        "nickname" => Field::Nickname,
                        "masterid" => Field::MasterId,
                        _ => {
                            return Err(TemplateError::UnknownPlaceholder {
                                template: template.to_owned(),
                                name: name.to_owned(),
                            })
                        }
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(field));
                    // Skip the name and the closing brace.
                    for _ in template[at + 1..=close].chars() {
                        rest.next();
                    }
                }
                '}' => {
                    return Err(TemplateError::UnmatchedBrace {
                        template: template.to_owned(),
                        brace: '}',
                        at,
                    })
                }
                _ => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let parsed = Self {
            source: template.to_owned(),
            parts,
        };
        let sample = MasterAddress {
            masterid: 1,
            nickname: "bm01",
            fqdn: "buildbot-master01.example.invalid",
            http_port: 8010,
        };
        parsed.expand(&sample).map_err(|e| TemplateError::NotHttp {
            template: template.to_owned(),
            reason: match e {
                ExpandError::NotHttp { reason, .. } => reason,
                other => other.to_string(),
            },
        })?;
        Ok(parsed)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The URL of `master`'s workers list.
    ///
    /// The nickname is percent-encoded (it may sit in a path); the fqdn must
    /// be a plain host name (letters, digits, `-`, `.`, `_`) and is inserted
    /// as is.
    pub fn expand(&self, master: &MasterAddress<'_>) -> Result<String, ExpandError> {
        let mut url = String::with_capacity(self.source.len() + master.fqdn.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => url.push_str(text),
                Part::Field(Field::Fqdn) => {
                    let plain = !master.fqdn.is_empty()
                        && master
                            .fqdn
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
                    if !plain {
                        return Err(ExpandError::BadFqdn {
                            nickname: master.nickname.to_owned(),
                            fqdn: master.fqdn.to_owned(),
                        });
                    }
                    url.push_str(master.fqdn);
                }
                Part::Field(Field::HttpPort) => {
                    if !(1..=65535).contains(&master.http_port) {
                        return Err(ExpandError::NoHttpPort {
                            nickname: master.nickname.to_owned(),
                            port: master.http_port,
                        });
                    }
                    url.push_str(&master.http_port.to_string());
                }
                Part::Field(Field::Nickname) => percent_encode_into(master.nickname, &mut url),
                Part::Field(Field::MasterId) => url.push_str(&master.masterid.to_string()),
            }
        }
        let not_http = |reason: String| ExpandError::NotHttp {
            nickname: master.nickname.to_owned(),
            url: url.clone(),
            reason,
        };
        let parsed = url::Url::parse(&url).map_err(|e| not_http(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(not_http(format!("scheme {:?}, not http or https", parsed.scheme())));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(not_http("no host".to_owned()));
        }
        Ok(parsed.into())
    }
}

impl fmt::Debug for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UrlTemplate").field(&self.source).finish()
    }
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Default for UrlTemplate {
    fn default() -> Self {
        Self {
            source: DEFAULT_URL_TEMPLATE.to_owned(),
            parts: vec![
                Part::Text("http://".to_owned()),
                Part::Field(Field::Fqdn),
                Part::Text(":".to_owned()),
                Part::Field(Field::HttpPort),
                Part::Text("/api/v2/workers".to_owned()),
            ],
        }
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters,
/// so a value can sit in a path segment or a query without changing either.
fn percent_encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master<'a>(nickname: &'a str, fqdn: &'a str, http_port: i32) -> MasterAddress<'a> {
        MasterAddress {
            masterid: 7,
            nickname,
            fqdn,
            http_port,
        }
    }

    #[test]
    fn the_default_is_what_parsing_it_gives() {
        assert_eq!(
            UrlTemplate::default(),
            UrlTemplate::parse(DEFAULT_URL_TEMPLATE).unwrap()
        );
    }

    #[test]
    fn expands_every_placeholder() {
        let cases = [
            (DEFAULT_URL_TEMPLATE, "http://bm07.build.example:8010/api/v2/workers"),
            (
                "https://proxy.example/{nickname}/{masterid}/api/v2/workers",
                "https://proxy.example/bm07-tests/7/api/v2/workers",
            ),
            (
                "http://{fqdn}:{http_port}/api/v2/workers?field=name&master={nickname}",
                "http://bm07.build.example:8010/api/v2/workers?field=name&master=bm07-tests",
            ),
        ];
        for (template, want) in cases {
            let got = UrlTemplate::parse(template)
                .unwrap()
                .expand(&master("bm07-tests", "bm07.build.example", 8010))
                .unwrap();
            assert_eq!(got, want, "{template}");
        }
    }

    #[test]
    fn a_nickname_cannot_change_the_url_structure() {
        let t = UrlTemplate::parse("https://proxy.example/{nickname}/workers").unwrap();
        let got = t.expand(&master("a/b?c#d e", "x", 1)).unwrap();
        assert_eq!(got, "https://proxy.example/a%2Fb%3Fc%23d%20e/workers");
    }

    #[test]
    fn config_errors_are_clear() {
        let unknown = UrlTemplate::parse("http://{host}:{http_port}/api/v2/workers").unwrap_err();
        assert_eq!(
            unknown,
            TemplateError::UnknownPlaceholder {
                template: "http://{host}:{http_port}/api/v2/workers".into(),
                name: "host".into()
            }
        );
        assert!(unknown.to_string().contains("unknown placeholder {host}"), "{unknown}");
        assert!(unknown.to_string().contains("{fqdn}, {http_port}"), "{unknown}");

        for (template, brace, at) in [
            ("http://{fqdn:{http_port}/", '{', 7),
            ("http://{fqdn", '{', 7),
            ("http://fqdn}/", '}', 11),
        ] {
            assert_eq!(
                UrlTemplate::parse(template).unwrap_err(),
                TemplateError::UnmatchedBrace {
                    template: template.into(),
                    brace,
                    at
                },
                "{template}"
            );
        }

        for (template, says) in [
            ("ftp://{fqdn}/workers", "scheme \"ftp\""),
            ("file:///tmp/{nickname}.json", "scheme \"file\""),
            ("{fqdn}:{http_port}/api/v2/workers", "scheme"),
            ("/api/v2/workers", "relative URL without a base"),
            ("http://", "empty host"),
        ] {
            let e = UrlTemplate::parse(template).unwrap_err();
            assert!(
                matches!(&e, TemplateError::NotHttp { reason, .. } if reason.contains(says)),
                "{template}: {e}"
            );
            assert!(e.to_string().contains("does not make an http(s) URL"), "{e}");
        }
    }

    #[test]
    fn a_master_row_unfit_for_the_template_is_an_expand_error() {
        let t = UrlTemplate::default();
        assert_eq!(
            t.expand(&master("bm01", "bm01.example", 0)).unwrap_err(),
            ExpandError::NoHttpPort {
                nickname: "bm01".into(),
                port: 0
            }
        );
        assert!(matches!(
            t.expand(&master("bm01", "bm01.example", 70000)),
            Err(ExpandError::NoHttpPort { port: 70000, .. })
        ));
        for fqdn in ["", "evil.example/x?", "user@host", "a b", "[::1]"] {
            assert!(
                matches!(t.expand(&master("bm01", fqdn, 8010)), Err(ExpandError::BadFqdn { .. })),
                "{fqdn:?}"
            );
        }
        // A template without {http_port} serves masters without one.
        let proxy = UrlTemplate::parse("https://proxy.example/{nickname}/api/v2/workers").unwrap();
        assert!(proxy.expand(&master("bm01", "bm01.example", 0)).is_ok());
    }
}
