//! # slavealloc-tac-minijinja
//!
//! Renders the `buildbot.tac` a build machine fetches at boot: the
//! [`TacRenderer`] port of `slavealloc-domain`, with minijinja.
//!
//! A tac is Python that the machine runs, and its values (names, base
//! directories, passwords) come from the database. The main design decision:
//! **a value reaches a tac only as a Python literal.** Every `{{ ... }}` of a
//! minijinja template goes through one formatter that writes Python
//! literals ([`python_str_literal`]), undefined names are errors
//! (`UndefinedBehavior::Strict`), and the original's `%(name)r` templates
//! are filled by this crate's own small `%` implementation, which refuses
//! what it cannot do safely. Whatever the values hold, the tac runs only
//! the template's own code.
//!
//! What it renders:
//! - the header, exactly as the original wrote it (`time.ctime()` format,
//!   in UTC);
//! - the disabled tac: prints `SLAVE DISABLED; NOT STARTING` and exits 0;
//! - two built-in templates, [`BuiltinTemplate::Buildslave`] (the
//!   original's default, idleizer included) and
//!   [`BuiltinTemplate::BuildbotWorker`] (today's `buildbot-worker`);
//! - a slave's custom template from `tac_templates`, written either in the
//!   original's Python placeholders (`%(name)r`, `%(name)s`, `%(name)d`,
//!   `%%`) or in minijinja (chosen by whether it holds a minijinja tag).
//!   `%(name)s` writes a value unquoted, as the original did, so it refuses
//!   a value holding a quote, a backslash or a control character, which
//!   could end the string the template put it in.
//!
//! Every tac is ASCII and valid Python 2 and Python 3 source as long as the
//! template is.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use slavealloc_domain::ports::{TacBody, TacHeader, TacRequest, TacValues};
//! use slavealloc_domain::TacRenderer;
//! use slavealloc_tac_minijinja::{BuiltinTemplate, MinijinjaRenderer, RendererConfig};
//!
//! let renderer = MinijinjaRenderer::new(RendererConfig {
//!     default_template: BuiltinTemplate::BuildbotWorker,
//!     ..RendererConfig::default()
//! });
//! let tac = renderer.render(&TacRequest {
//!     header: TacHeader {
//!         generated: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
//!         host: "slavealloc.example.com".into(),
//!     },
//!     body: TacBody::Enabled {
//!         template: None,
//!         values: TacValues {
//!             buildmaster_host: "bm01.example.com".into(),
//!             port: 9001,
//!             slavename: "tst-linux64-01".into(),
//!             basedir: "/builds/worker".into(),
//!             passwd: "it's secret".into(),
//!         },
//!     },
//! })?;
//! let header = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n\
//!               ## generated: Tue Nov 14 22:13:20 2023 on slavealloc.example.com\n\n";
//! assert!(tac.starts_with(header));
//! assert!(tac.contains("passwd = \"it's secret\"\n"));
//! assert!(tac.contains("application = service.Application('buildbot-worker')\n"));
//! # Ok::<(), slavealloc_domain::RenderError>(())
//! ```

mod guard;
mod literal;
mod percent;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use slavealloc_domain::ports::{TacBody, TacRequest, TacValues};
use slavealloc_domain::{RenderError, TacRenderer, TacTemplate};

pub use literal::python_str_literal;

/// The header's first line; clients accept a tac only if it holds it.
pub const HEADER_MARK: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY";

/// What the disabled tac prints.
pub const DISABLED_MESSAGE: &str = "SLAVE DISABLED; NOT STARTING";

const DISABLED_BODY: &str = include_str!("../templates/disabled.py");
const BUILDSLAVE: &str = include_str!("../templates/buildslave.tac.j2");
const BUILDBOT_WORKER: &str = include_str!("../templates/buildbot-worker.tac.j2");

/// How many minijinja instructions one render may run: far more than any
/// tac needs, few enough that a runaway loop in a stored template fails
/// within milliseconds instead of holding a thread.
const FUEL: u64 = 100_000;

/// The longest template text accepted, stored or checked: a tac is a few
/// KiB, and every cost of a template grows with its length.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// The longest tac body a template may produce. Enforced while rendering
/// (the output is written into a buffer that refuses to grow past it), so
/// a template that would write gigabytes fails after writing 1 MiB.
pub const MAX_TAC_BYTES: usize = 1024 * 1024;

/// How long each value is when [`validate_template`] renders a template:
/// longer than any real name, base directory or password, so that a
/// template whose cost grows with its values shows it when it is stored.
pub const SAMPLE_VALUE_BYTES: usize = 64 * 1024;

/// How long [`validate_template`]'s worst-case render may take. Every real
/// tac renders in well under a millisecond even with 64 KiB values; a
/// template slower than this would hold a render thread on a long value.
pub const VALIDATION_BUDGET: Duration = Duration::from_millis(250);

/// The name [`validate_template`] gives its template in errors.
const UNSAVED: &str = "(new template)";

/// A template built into the renderer, used for slaves without a
/// `custom_tplid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinTemplate {
    /// The original's default: `buildslave.bot.BuildSlave` (Python 2) in
    /// `Application('buildslave')`, plus the idleizer unless the slave's name
    /// matches [`RendererConfig::no_idleizer`].
    Buildslave,
    /// Today's `buildbot_worker.bot.Worker` in
    /// `Application('buildbot-worker')`, which `buildbot-worker start`
    /// requires.
    BuildbotWorker,
}

impl BuiltinTemplate {
    /// Every built-in template.
    pub const ALL: [BuiltinTemplate; 2] = [BuiltinTemplate::Buildslave, BuiltinTemplate::BuildbotWorker];

    /// Its name in configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinTemplate::Buildslave => "buildslave",
            BuiltinTemplate::BuildbotWorker => "buildbot-worker",
        }
    }

    fn source(self) -> &'static str {
        match self {
            BuiltinTemplate::Buildslave => BUILDSLAVE,
            BuiltinTemplate::BuildbotWorker => BUILDBOT_WORKER,
        }
    }
}

impl fmt::Display for BuiltinTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no [`BuiltinTemplate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown built-in template {0:?}: expected \"buildslave\" or \"buildbot-worker\"")]
pub struct UnknownBuiltinTemplate(pub String);

impl FromStr for BuiltinTemplate {
    type Err = UnknownBuiltinTemplate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BuiltinTemplate::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownBuiltinTemplate(s.to_owned()))
    }
}

/// How the renderer is set up; read from the daemon's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RendererConfig {
    /// The template for slaves without a custom one. Defaults to
    /// [`BuiltinTemplate::Buildslave`], what the original served, so that
    /// replacing it changes no tac.
    pub default_template: BuiltinTemplate,
    /// Slaves whose name contains any of these strings get the `buildslave`
    /// template without the idleizer (the original hard-coded `panda-` and
    /// `tegra`: mobile boards that reboot by other means).
    pub no_idleizer: Vec<String>,
}

impl Default for RendererConfig {
    fn default() -> Self {
        RendererConfig {
            default_template: BuiltinTemplate::Buildslave,
            no_idleizer: vec!["panda-".to_owned(), "tegra".to_owned()],
        }
    }
}

/// The [`TacRenderer`] of slavealloc: built-in and stored templates, with
/// every value written as a Python literal.
#[derive(Debug)]
pub struct MinijinjaRenderer {
    env: Environment<'static>,
    config: RendererConfig,
    /// A built-in template that failed to compile (a bug the tests catch),
    /// reported by every render that needs it rather than by a panic.
    broken_builtins: Vec<(BuiltinTemplate, String)>,
}

impl Default for MinijinjaRenderer {
    fn default() -> Self {
        MinijinjaRenderer::new(RendererConfig::default())
    }
}

impl MinijinjaRenderer {
    /// A renderer with `config`.
    pub fn new(config: RendererConfig) -> MinijinjaRenderer {
        let mut env = environment();
        let mut broken_builtins = Vec::new();
        for builtin in BuiltinTemplate::ALL {
            if let Err(e) = env.add_template(builtin.name(), builtin.source()) {
                broken_builtins.push((builtin, e.to_string()));
            }
        }
        MinijinjaRenderer {
            env,
            config,
            broken_builtins,
        }
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &RendererConfig {
        &self.config
    }

    /// Whether the `buildslave` template gives this slave the idleizer.
    pub fn wants_idleizer(&self, slavename: &str) -> bool {
        !self
            .config
            .no_idleizer
            .iter()
            .any(|part| slavename.contains(part.as_str()))
    }

    fn render_builtin(&self, builtin: BuiltinTemplate, fill: &Fill<'_>) -> Result<String, RenderError> {
        let name = builtin.name();
        if let Some((_, message)) = self.broken_builtins.iter().find(|(b, _)| *b == builtin) {
            return Err(invalid(name, message.clone()));
        }
        let template = self.env.get_template(name).map_err(|e| engine_error(name, &e))?;
        let mut context = fill.context();
        context.push((
            "idleizer",
            minijinja::Value::from(self.wants_idleizer(&fill.values.slavename)),
        ));
        guard::render_capped(&template, minijinja::Value::from_iter(context), MAX_TAC_BYTES)
            .map_err(|e| engine_error(name, &e))
    }

    fn render_stored(&self, stored: &TacTemplate, fill: &Fill<'_>) -> Result<String, RenderError> {
        // The original fell back to its default for an empty template
        // (`allocation.template or default_template`).
        if stored.template.is_empty() {
            return self.render_builtin(self.config.default_template, fill);
        }
        render_stored_text(&self.env, &stored.name, &stored.template, fill)
    }
}

impl TacRenderer for MinijinjaRenderer {
    fn check_template(&self, text: &str) -> Result<(), RenderError> {
        validate_template(text)
    }

    fn render(&self, request: &TacRequest) -> Result<String, RenderError> {
        let gendate = ctime(request.header.generated)?;
        let genhost = host_comment(&request.header.host);
        let mut tac = format!("{HEADER_MARK}\n# generated: {gendate} on {genhost}\n\n");
        match &request.body {
            TacBody::Disabled { .. } => tac.push_str(DISABLED_BODY),
            TacBody::Enabled { template, values } => {
                let fill = Fill {
                    values,
                    gendate: &gendate,
                    genhost: &request.header.host,
                };
                let body = match template {
                    None => self.render_builtin(self.config.default_template, &fill)?,
                    Some(stored) => self.render_stored(stored, &fill)?,
                };
                tac.push_str(&body);
            }
        }
        Ok(tac)
    }
}

/// Checks a template before it is stored in `tac_templates`: it must parse,
/// name only known placeholders (`buildmaster_host`, `port`, `slavename`,
/// `basedir`, `passwd`, and the header's `gendate` and `genhost`), use only
/// the constructs a tac needs (see the crate's allow-list: no string
/// repetition or concatenation operators, no macros, captures or
/// includes, only a few filters and tests), and render with worst-case
/// sample values — every string [`SAMPLE_VALUE_BYTES`] long — into at
/// most [`MAX_TAC_BYTES`] within [`VALIDATION_BUDGET`]. So a template that
/// would be huge or slow on a long base directory is refused when it is
/// stored, not when a slave boots.
///
/// # Errors
/// [`RenderError::UnknownPlaceholder`] naming the first unknown placeholder;
/// [`RenderError::Invalid`] for anything else, with the line where it can
/// tell. Errors name the template `(new template)`.
pub fn validate_template(text: &str) -> Result<(), RenderError> {
    let env = environment();
    let values = TacValues {
        buildmaster_host: "master.example.com".to_owned(),
        port: 9989,
        slavename: "sample-slave-01".to_owned(),
        basedir: "/builds/slave".to_owned(),
        passwd: "sample-password".to_owned(),
    };
    let fill = Fill {
        values: &values,
        gendate: "Thu Jan  1 00:00:00 1970",
        genhost: "slavealloc.example.com",
    };
    // Realistic values first, so that a plain mistake gets its plain error.
    render_stored_text(&env, UNSAVED, text, &fill)?;
    let long = |prefix: &str| {
        let mut s = String::with_capacity(SAMPLE_VALUE_BYTES);
        s.push_str(prefix);
        while s.len() < SAMPLE_VALUE_BYTES {
            s.push('x');
        }
        s
    };
    let worst = TacValues {
        buildmaster_host: long("master."),
        port: i32::MAX,
        slavename: long("slave-"),
        basedir: long("/builds/"),
        passwd: long("pw-"),
    };
    let gendate = long("Thu ");
    let genhost = long("host.");
    let fill = Fill {
        values: &worst,
        gendate: &gendate,
        genhost: &genhost,
    };
    let started = Instant::now();
    render_stored_text(&env, UNSAVED, text, &fill).map_err(|e| match e {
        RenderError::Invalid { template, message } => RenderError::Invalid {
            template,
            message: format!("with {} KiB values: {message}", SAMPLE_VALUE_BYTES / 1024),
        },
        other => other,
    })?;
    let took = started.elapsed();
    if took > VALIDATION_BUDGET {
        return Err(invalid(
            UNSAVED,
            format!(
                "it takes {} ms to render with {} KiB values (at most {} ms): it would hold a render thread \
                 on a long base directory",
                took.as_millis(),
                SAMPLE_VALUE_BYTES / 1024,
                VALIDATION_BUDGET.as_millis()
            ),
        ));
    }
    Ok(())
}

/// The allow-list environment: [`Environment::empty`] (no filters, tests
/// or functions: no `range`, `join`, `replace`, `indent`, ...) plus the few
/// that cannot amplify their input (see [`guard::allow_list`]).
fn environment() -> Environment<'static> {
    let mut env = Environment::empty();
    guard::allow_list(&mut env);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_formatter(|out, _state, value| literal::format_value(out, value));
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Templates are files: their last newline belongs to the tac.
    env.set_keep_trailing_newline(true);
    env.set_fuel(Some(FUEL));
    // Same error text in debug and release builds.
    env.set_debug(false);
    env
}

fn render_stored_text(env: &Environment<'_>, name: &str, text: &str, fill: &Fill<'_>) -> Result<String, RenderError> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(invalid(
            name,
            format!(
                "it is {} bytes long, more than the {MAX_TEMPLATE_BYTES} a template may have",
                text.len()
            ),
        ));
    }
    if !percent::is_minijinja(text) {
        return percent::substitute(name, text, fill, MAX_TAC_BYTES);
    }
    if let Some(directive) = percent::first_known_directive(text) {
        return Err(invalid(
            name,
            format!("it has minijinja tags and the %-placeholder {directive}; use one style only"),
        ));
    }
    let template = env
        .template_from_named_str(name, text)
        .map_err(|e| engine_error(name, &e))?;
    // After parsing, so that a syntax error gets minijinja's own message.
    guard::refuse_unbounded(text).map_err(|message| invalid(name, message))?;
    // Checked before rendering so that the error names the placeholder;
    // strict undefined behaviour would only say "undefined value".
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|var| !Fill::NAMES.contains(&var.as_str()) && !env.globals().any(|(global, _)| global == var))
        .collect();
    unknown.sort();
    if let Some(placeholder) = unknown.into_iter().next() {
        return Err(RenderError::UnknownPlaceholder {
            template: name.to_owned(),
            placeholder,
        });
    }
    guard::render_capped(&template, minijinja::Value::from_iter(fill.context()), MAX_TAC_BYTES)
        .map_err(|e| engine_error(name, &e))
}

/// The values a template can name, and how they are looked up.
#[derive(Debug)]
pub(crate) struct Fill<'a> {
    values: &'a TacValues,
    gendate: &'a str,
    genhost: &'a str,
}

impl<'a> Fill<'a> {
    /// The original's placeholders: the allocation's values and the
    /// header's date and host.
    pub(crate) const NAMES: [&'static str; 7] = [
        "buildmaster_host",
        "port",
        "slavename",
        "basedir",
        "passwd",
        "gendate",
        "genhost",
    ];

    pub(crate) fn get(&self, name: &str) -> Option<percent::Value<'a>> {
        use percent::Value::{Int, Str};
        let v = self.values;
        Some(match name {
            "buildmaster_host" => Str(&v.buildmaster_host),
            "port" => Int(v.port),
            "slavename" => Str(&v.slavename),
            "basedir" => Str(&v.basedir),
            "passwd" => Str(&v.passwd),
            "gendate" => Str(self.gendate),
            "genhost" => Str(self.genhost),
            _ => return None,
        })
    }

    fn context(&self) -> Vec<(&'static str, minijinja::Value)> {
        Fill::NAMES
            .iter()
            .filter_map(|&name| {
                let value = match self.get(name)? {
                    percent::Value::Str(s) => minijinja::Value::from(s),
                    percent::Value::Int(n) => minijinja::Value::from(n),
                };
                Some((name, value))
            })
            .collect()
    }
}

fn invalid(template: &str, message: String) -> RenderError {
    RenderError::Invalid {
        template: template.to_owned(),
        message,
    }
}

fn engine_error(template: &str, e: &minijinja::Error) -> RenderError {
    let message = match e.kind() {
        ErrorKind::OutOfFuel => "it runs too long (endless loop?)".to_owned(),
        ErrorKind::WriteFailure => format!("its output is longer than {MAX_TAC_BYTES} bytes"),
        _ => e.to_string(),
    };
    invalid(template, message)
}

/// `t` as Python's `time.ctime()` writes it (`Thu Nov  5 14:10:44 2026`),
/// in UTC.
fn ctime(t: SystemTime) -> Result<String, RenderError> {
    let seconds = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => {
            let before = before.duration();
            i64::try_from(before.as_secs())
                .ok()
                .map(|s| -s - i64::from(before.subsec_nanos() > 0))
        }
    };
    let format = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    seconds
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .ok_or_else(|| {
            invalid(
                "header",
                format!("the generation time {t:?} cannot be written as a date"),
            )
        })
}

/// The host name as it may appear in the header's comment: host-name
/// characters only (ASCII letters, digits, `-`, `.`, `_`), every other
/// character written as `_`. So the comment can neither end (no newline),
/// nor make Python 2 refuse the file (ASCII), nor become a coding cookie:
/// PEP 263's `coding[:=]` needs a `:` or `=` on line 1 or 2, and this is
/// line 2 (`coding:utf-7` would make Python decode the tac as UTF-7, in
/// which `+AAo-` is a newline).
fn host_comment(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_compile() {
        let renderer = MinijinjaRenderer::default();
        assert!(renderer.broken_builtins.is_empty(), "{:?}", renderer.broken_builtins);
    }

    #[test]
    fn ctime_pads_the_day_with_a_space() {
        let at = |s: u64| ctime(UNIX_EPOCH + std::time::Duration::from_secs(s)).unwrap();
        assert_eq!(at(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(at(1_794_147_044), "Sun Nov  8 14:10:44 2026");
        assert_eq!(at(1_700_000_000), "Tue Nov 14 22:13:20 2023");
        let before = ctime(UNIX_EPOCH - std::time::Duration::from_millis(500)).unwrap();
        assert_eq!(before, "Wed Dec 31 23:59:59 1969");
    }

    #[test]
    fn host_cannot_leave_the_comment() {
        assert_eq!(host_comment("slavealloc.example.com"), "slavealloc.example.com");
        assert_eq!(host_comment("evil\nimport os"), "evil_import_os");
        assert_eq!(host_comment("h\u{e9}"), "h_");
    }

    #[test]
    fn host_cannot_make_a_coding_cookie() {
        for host in ["coding:utf-7", "x.coding=utf-7", "a # -*- coding: utf-7 -*-"] {
            let safe = host_comment(host);
            assert!(!safe.contains(':') && !safe.contains('='), "{safe}");
        }
        assert_eq!(host_comment("coding:utf-7"), "coding_utf-7");
    }

    #[test]
    fn builtin_names_round_trip() {
        for t in BuiltinTemplate::ALL {
            assert_eq!(t.to_string().parse::<BuiltinTemplate>(), Ok(t));
        }
        assert!("buildbot_worker".parse::<BuiltinTemplate>().is_err());
    }
}

#[cfg(test)]
mod port_tests {
    use slavealloc_domain::TacRenderer;

    use super::*;

    #[test]
    fn the_port_refuses_a_template_with_an_unknown_placeholder() {
        let err = MinijinjaRenderer::default()
            .check_template("x = %(slave_name)r\n")
            .unwrap_err();
        assert!(
            matches!(err, RenderError::UnknownPlaceholder { ref placeholder, .. } if placeholder.contains("slave_name")),
            "{err:?}"
        );
        MinijinjaRenderer::default()
            .check_template("x = %(slavename)r\n")
            .unwrap();
    }
}
