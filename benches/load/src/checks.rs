//! The checks every load run makes of what the daemon answered and
//! recorded: each slave's last 200 names the master the database holds
//! for it, and every pool × silo keeps the spread the rule guarantees.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use slavealloc_domain::reports::{silo_of, silo_spreads};
use slavealloc_domain::{FixedHost, Inventory, Row, SlaveFilter, Table, Value};
use slavealloc_store_sql::SqlStore;

/// The names of a fleet's slaves, in the dump's order: request `i` of a
/// run asks for the `i mod n`-th, and [`Answers`] is indexed the same way.
pub fn slave_names(fleet: &slavealloc_domain::Dump) -> Arc<Vec<String>> {
    Arc::new(
        fleet
            .rows(Table::Slaves)
            .iter()
            .filter_map(|r| r.get("name").and_then(|v| v.as_text()).map(str::to_owned))
            .collect(),
    )
}

/// Every slave (denormalized, as the reports read them, the
/// decommissioned environment a silo of its own) and every master, as the
/// database holds them after a run.
///
/// # Errors
/// The store's.
pub async fn read_back(store: &SqlStore) -> anyhow::Result<(Vec<Row>, Vec<Row>)> {
    let inventory = Inventory::new(
        Arc::new(store.clone()),
        Arc::new(FixedHost {
            now: std::time::SystemTime::now(),
            fqdn: "load".to_owned(),
        }),
    );
    let every = SlaveFilter {
        include_decomm: true,
        ..SlaveFilter::default()
    };
    let slaves = inventory.list(Table::Slaves, &every).await?;
    let masters = inventory.store().list(Table::Masters).await?;
    Ok((slaves, masters))
}

/// What a gettac answer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// The master of this index of [`Answers::masters`].
    Master(usize),
    /// The disabled tac: no master.
    Disabled,
}

/// The gettac 200s as they arrive: per slave, what the last one named.
#[derive(Debug, Default)]
pub struct Answers {
    /// The fleet's slaves; request `i` asks for `names[i % len]`.
    pub names: Arc<Vec<String>>,
    /// The masters (host, port) answers named so far: a fleet has few, so
    /// each answer costs a short search rather than an allocation.
    pub masters: Vec<(String, u16)>,
    /// Per slave (index in `names`), what its last 200 named.
    pub last: Vec<Option<Named>>,
    /// 200s read.
    pub read: usize,
    /// 200s that named another slave than the one asked for, or could not
    /// be read, with the first few of them.
    pub bad: usize,
    pub bad_examples: Vec<String>,
    /// Time spent in [`Answers::note`], to show that it is small.
    pub cost: Duration,
}

/// One enabled slave's tac, as far as the checks read it.
#[derive(Debug, PartialEq, Eq)]
pub struct TacMaster<'a> {
    pub slave: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// Reads an answered tac: `Some(None)` for the disabled tac, `Some(Some(_))`
/// for an enabled slave's (`slavename` or `workername`, `buildmaster_host`
/// and `port` assignments, as the templates of adapters/tac-minijinja write
/// them, values as Python literals), `None` for anything else. A few
/// substring searches from the start of the text (the assignments come
/// right after the header): no regex, no allocation.
pub fn read_tac(body: &[u8]) -> Option<Option<TacMaster<'_>>> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.starts_with("# AUTOMATICALLY GENERATED - DO NOT MODIFY\n") {
        return None;
    }
    let value = |key: &str| {
        let at = text.find(key)? + key.len();
        let rest = &text[at..];
        Some(rest[..rest.find('\n').unwrap_or(rest.len())].trim_end())
    };
    let Some(host) = value("\nbuildmaster_host = ") else {
        return text.contains("SLAVE DISABLED; NOT STARTING").then_some(None);
    };
    let slave = value("\nslavename = ").or_else(|| value("\nworkername = "))?;
    Some(Some(TacMaster {
        slave: python_str(slave)?,
        host: python_str(host)?,
        port: value("\nport = ")?.parse().ok()?,
    }))
}

/// The text of a Python string literal without escapes (`'x'` or `"x"`).
pub fn python_str(literal: &str) -> Option<&str> {
    let quote = literal.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let inner = literal.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains(['\\', quote])).then_some(inner)
}

impl Answers {
    pub fn new(names: Arc<Vec<String>>) -> Self {
        Self {
            last: vec![None; names.len()],
            names,
            ..Self::default()
        }
    }

    /// Request `i` was answered 200 with `body`.
    pub fn note(&mut self, i: usize, body: &[u8]) {
        self.read += 1;
        let k = i % self.names.len().max(1);
        let asked = self.names.get(k).map_or("", String::as_str);
        let named = match read_tac(body) {
            Some(None) => Named::Disabled,
            Some(Some(tac)) if tac.slave == asked => {
                let known = self.masters.iter().position(|(h, p)| h == tac.host && *p == tac.port);
                Named::Master(known.unwrap_or_else(|| {
                    self.masters.push((tac.host.to_owned(), tac.port));
                    self.masters.len() - 1
                }))
            }
            other => {
                self.bad += 1;
                if self.bad_examples.len() < 3 {
                    let what = match other {
                        Some(Some(tac)) => format!("named slave {}", tac.slave),
                        _ => format!(
                            "unreadable: {:?}",
                            String::from_utf8_lossy(&body[..body.len().min(120)])
                        ),
                    };
                    self.bad_examples.push(format!("the 200 for {asked} {what}"));
                }
                return;
            }
        };
        if let Some(last) = self.last.get_mut(k) {
            *last = Some(named);
        }
    }

    /// Compares each slave's last 200 with its `current_masterid` in
    /// these slave and master rows.
    pub fn check(&self, slaves: &[Row], masters: &[Row]) -> Recorded {
        let int = |r: &Row, c: &str| r.get(c).and_then(Value::as_int);
        let text = |r: &Row, c: &str| r.get(c).and_then(Value::as_text).unwrap_or_default().to_owned();
        let master_of: HashMap<i64, (String, u16)> = masters
            .iter()
            .filter_map(|m| {
                let port = u16::try_from(int(m, "pb_port")?).ok()?;
                Some((int(m, "masterid")?, (text(m, "fqdn"), port)))
            })
            .collect();
        let in_db: HashMap<String, Option<i64>> = slaves
            .iter()
            .map(|s| (text(s, "name"), int(s, "current_masterid")))
            .collect();
        let mut out = Recorded {
            bad_answers: self.bad,
            examples: self.bad_examples.clone(),
            ..Recorded::default()
        };
        let show = |m: Option<&(String, u16)>| m.map_or("no master".to_owned(), |(h, p)| format!("{h}:{p}"));
        for (name, last) in self.names.iter().zip(&self.last) {
            let Some(last) = last else {
                out.unanswered += 1;
                continue;
            };
            out.checked += 1;
            let expected = match last {
                Named::Master(m) => self.masters.get(*m),
                Named::Disabled => None,
            };
            let Some(current) = in_db.get(name).copied() else {
                out.mismatches += 1;
                out.examples.push(format!("{name} is not in the database"));
                continue;
            };
            let recorded = current.and_then(|id| master_of.get(&id));
            if recorded != expected || (current.is_some() && recorded.is_none()) {
                out.mismatches += 1;
                if out.examples.len() < 5 {
                    let db = current.map_or_else(
                        || "no master".to_owned(),
                        |id| {
                            master_of
                                .get(&id)
                                .map_or(format!("unknown master {id}"), |m| show(Some(m)))
                        },
                    );
                    out.examples.push(format!(
                        "{name}: last 200 named {}, the database has {db}",
                        show(expected)
                    ));
                }
            }
        }
        out
    }
}

/// What [`Answers::check`] found.
#[derive(Debug, Default)]
pub struct Recorded {
    pub checked: usize,
    pub mismatches: usize,
    /// Slaves without a 200 (an error on each request for them).
    pub unanswered: usize,
    pub bad_answers: usize,
    pub examples: Vec<String>,
}

impl Recorded {
    pub fn ok(&self) -> bool {
        self.mismatches == 0 && self.bad_answers == 0 && self.checked > 0
    }

    pub fn line(&self) -> String {
        let unanswered = match self.unanswered {
            0 => String::new(),
            n => format!(", {n} without a 200 unchecked"),
        };
        if self.ok() {
            format!("yes ({} slaves checked{unanswered})", self.checked)
        } else {
            format!(
                "NO: {} of {} slaves recorded another master than their last 200 named, {} 200s named another slave or were unreadable{unanswered}; {}",
                self.mismatches,
                self.checked,
                self.bad_answers,
                self.examples.join("; ")
            )
        }
    }
}

/// The spread of every pool × silo, as the allocation rule keeps it.
#[derive(Debug, Default)]
pub struct Spread {
    /// Groups whose pool has an enabled master.
    pub groups: usize,
    /// Largest spread over a group's enabled masters that hold one of its
    /// balanced (enabled, unlocked) slaves, from the least loaded enabled
    /// master.
    pub worst: u64,
    /// Largest spread over all of a group's enabled masters, as the silos
    /// report shows it (locked slaves can make it larger than `worst`).
    pub worst_reported: u64,
    /// Groups over 1 only because of slaves locked to a master.
    pub locked_only: usize,
    /// Balanced slaves on no enabled master of their pool.
    pub stranded: usize,
    pub examples: Vec<String>,
}

impl Spread {
    /// Spreads from denormalized slave rows and plain master rows. The
    /// rule counts every slave of the pool × silo on a master as its load,
    /// locked ones included, and moves only the enabled unlocked ones; so
    /// once all have asked, every enabled master that holds one of those
    /// carries at most one more than the least loaded enabled master
    /// (exactly spread ≤ 1 when no locked slave weighs on one).
    pub fn check(slaves: &[Row], masters: &[Row]) -> Spread {
        let int = |r: &Row, c: &str| r.get(c).and_then(Value::as_int);
        let text = |r: &Row, c: &str| r.get(c).and_then(Value::as_text).unwrap_or_default().to_owned();
        let by_nickname: HashMap<String, &Row> = masters.iter().map(|m| (text(m, "nickname"), m)).collect();
        let mut members: BTreeMap<(String, Vec<String>), Vec<&Row>> = BTreeMap::new();
        for s in slaves {
            members.entry((text(s, "pool"), silo_of(s))).or_default().push(s);
        }
        let balanced = |s: &Row| s.get("enabled") == Some(&Value::Bool(true)) && int(s, "locked_masterid").is_none();
        let mut out = Spread::default();
        for g in silo_spreads(slaves, masters) {
            let enabled: Vec<_> = g
                .masters
                .iter()
                .filter(|m| m.enabled)
                .filter_map(|m| Some((m, int(by_nickname.get(&m.nickname)?, "masterid")?)))
                .collect();
            let Some(min) = enabled.iter().map(|(m, _)| m.slaves).min() else {
                continue;
            };
            out.groups += 1;
            out.worst_reported = out.worst_reported.max(g.spread);
            let group = members
                .get(&(g.pool.clone(), g.silo.clone()))
                .map_or(&[][..], Vec::as_slice);
            let holds_balanced = |id: i64| {
                group
                    .iter()
                    .any(|s| balanced(s) && int(s, "current_masterid") == Some(id))
            };
            let worst = enabled
                .iter()
                .filter(|(_, id)| holds_balanced(*id))
                .map(|(m, _)| m.slaves - min)
                .max()
                .unwrap_or(0);
            out.worst = out.worst.max(worst);
            if g.spread > 1 && worst <= 1 {
                out.locked_only += 1;
            }
            let stranded = group
                .iter()
                .filter(|s| balanced(s))
                .filter(|s| !int(s, "current_masterid").is_some_and(|c| enabled.iter().any(|(_, id)| *id == c)))
                .count();
            out.stranded += stranded;
            if (worst > 1 || stranded > 0) && out.examples.len() < 5 {
                let loads: Vec<String> = g
                    .masters
                    .iter()
                    .map(|m| {
                        format!(
                            "{}{}={}",
                            m.nickname,
                            if m.enabled { "" } else { " (disabled)" },
                            m.slaves
                        )
                    })
                    .collect();
                out.examples.push(format!(
                    "{} {}: {}, {} unallocated, {} elsewhere, {stranded} enabled unlocked slaves on no enabled master",
                    g.pool,
                    g.silo.join("/"),
                    loads.join(" "),
                    g.unallocated,
                    g.elsewhere
                ));
            }
        }
        out
    }

    pub fn ok(&self) -> bool {
        self.worst <= 1 && self.stranded == 0 && self.groups > 0
    }

    pub fn line(&self) -> String {
        let locked = match self.locked_only {
            0 => String::new(),
            n => format!(
                "; {n} groups over 1 (at most {}) only by slaves locked to their master",
                self.worst_reported
            ),
        };
        if self.ok() {
            format!(
                "yes (worst spread {} over {} (pool, silo) groups{locked})",
                self.worst, self.groups
            )
        } else {
            format!(
                "NO: worst spread {} over {} (pool, silo) groups, {} enabled unlocked slaves on no enabled master of their pool{locked}; {}",
                self.worst,
                self.groups,
                self.stranded,
                self.examples.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The renderer's golden tacs, so that the reader follows the templates.
    const GOLDEN: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../adapters/tac-minijinja/tests/golden/"
    );

    fn golden(name: &str) -> Vec<u8> {
        std::fs::read(format!("{GOLDEN}{name}")).expect("a golden tac of adapters/tac-minijinja")
    }

    #[test]
    fn both_templates_name_their_slave_and_master() {
        for (name, slave) in [
            ("buildslave.tac", "tst-linux64-ec2-001"),
            ("buildbot-worker.tac", "tst-linux64-ec2-001"),
            ("buildslave-no-idleizer.tac", "panda-0123"),
        ] {
            let master = TacMaster {
                slave,
                host: "bm01.build.example.com",
                port: 9001,
            };
            assert_eq!(read_tac(&golden(name)), Some(Some(master)), "{name}");
        }
        assert_eq!(read_tac(&golden("disabled.tac")), Some(None));
    }

    #[test]
    fn anything_else_is_unreadable() {
        let tac = golden("buildslave.tac");
        assert_eq!(read_tac(b"no allocation available"), None);
        assert_eq!(read_tac(&tac[1..]), None, "no header");
        let text = String::from_utf8(tac).expect("UTF-8");
        let escaped = text.replace("'tst-linux64-ec2-001'", "'tst\\x41'");
        assert_eq!(read_tac(escaped.as_bytes()), None, "an escape is not read");
        let no_port = text.replace("\nport = 9001", "\nport = x");
        assert_eq!(read_tac(no_port.as_bytes()), None);
    }

    #[test]
    fn the_last_answer_of_each_slave_is_kept() {
        let names = Arc::new(vec!["a".to_owned(), "b".to_owned()]);
        let mut answers = Answers::new(names);
        let tac = |slave: &str, host: &str| {
            format!(
                "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n#\n\nbuildmaster_host = '{host}'\nport = 9001\nslavename = '{slave}'\n"
            )
        };
        answers.note(0, tac("a", "m1").as_bytes());
        answers.note(1, tac("b", "m1").as_bytes());
        answers.note(2, tac("a", "m2").as_bytes());
        answers.note(3, tac("a", "m2").as_bytes());
        assert_eq!(answers.last, [Some(Named::Master(1)), Some(Named::Master(0))]);
        assert_eq!((answers.read, answers.bad), (4, 1), "request 3 asked for b");
    }

    fn row(cells: &[(&str, Value)]) -> Row {
        cells.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn master(id: i64, enabled: bool) -> Row {
        row(&[
            ("masterid", Value::Int(id)),
            ("nickname", Value::Text(format!("bm{id}"))),
            ("fqdn", Value::Text(format!("bm{id}.example.com"))),
            ("pb_port", Value::Int(9000 + id)),
            ("poolid", Value::Int(1)),
            ("enabled", Value::Bool(enabled)),
        ])
    }

    /// A denormalized slave of pool 1, silo `ubuntu`.
    fn slave(n: usize, on: Option<i64>, locked: bool) -> Row {
        let id = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
        let mut r = row(&[
            ("name", Value::Text(format!("s{n}"))),
            ("poolid", Value::Int(1)),
            ("pool", Value::Text("pool".into())),
            ("distro", Value::Text("ubuntu".into())),
            ("enabled", Value::Bool(true)),
            ("current_masterid", id(on)),
            ("locked_masterid", id(on.filter(|_| locked))),
        ]);
        r.insert("environment".into(), Value::Text("prod".into()));
        r
    }

    #[test]
    fn the_spread_is_what_the_rule_can_balance() {
        let masters = [master(1, true), master(2, true), master(3, false)];
        let free = [
            slave(1, Some(1), false),
            slave(2, Some(1), false),
            slave(3, Some(2), false),
        ];
        let check = |extra: &[Row]| Spread::check(&[&free[..], extra].concat(), &masters);
        assert!(check(&[]).ok(), "2 and 1");
        let three = check(&[slave(4, Some(1), false)]);
        assert_eq!((three.ok(), three.worst), (false, 2), "3 and 1");
        let locked = check(&[
            slave(4, Some(1), true),
            slave(5, Some(1), true),
            slave(6, Some(1), true),
        ]);
        assert!(!locked.ok(), "bm1 holds balanced slaves besides its locked ones");
        let only_locked = Spread::check(
            &[
                slave(1, Some(1), true),
                slave(2, Some(1), true),
                slave(4, Some(1), true),
                slave(3, Some(2), false),
            ],
            &masters,
        );
        assert!(only_locked.ok(), "{}", only_locked.line());
        assert_eq!((only_locked.worst_reported, only_locked.locked_only), (2, 1));
        let disabled_master = check(&[slave(4, Some(3), false)]);
        assert_eq!(
            (disabled_master.ok(), disabled_master.stranded),
            (false, 1),
            "on a disabled master"
        );
        assert_eq!(check(&[]).groups, 1);
    }

    #[test]
    fn each_slave_must_hold_what_its_last_200_named() {
        let names = Arc::new(vec!["s1".to_owned(), "s2".to_owned()]);
        let mut answers = Answers::new(names);
        let tac = |slave: &str, m: i64| {
            format!(
                "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n#\n\nbuildmaster_host = 'bm{m}.example.com'\nport = {}\nslavename = '{slave}'\n",
                9000 + m
            )
        };
        answers.note(0, tac("s1", 1).as_bytes());
        let masters = [master(1, true), master(2, true)];
        let first = answers.check(&[slave(1, Some(1), false), slave(2, Some(2), false)], &masters);
        assert_eq!(
            (first.checked, first.unanswered, first.ok()),
            (1, 1, true),
            "{}",
            first.line()
        );
        answers.note(1, &golden("disabled.tac"));
        let wrong = answers.check(&[slave(1, Some(2), false), slave(2, Some(2), false)], &masters);
        assert_eq!(
            (wrong.checked, wrong.mismatches, wrong.ok()),
            (2, 2, false),
            "{}",
            wrong.line()
        );
    }
}
