//! Small fleets built in code, as dumps: what the contract cases load.

use slavealloc_domain::schema::{Row, Table, Value};
use slavealloc_domain::Dump;

/// A row from `(column, value)` pairs.
pub fn row(pairs: &[(&str, Value)]) -> Row {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// `Value::Int`.
pub fn int(i: i64) -> Value {
    Value::Int(i)
}

/// `Value::Text`.
pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// A fleet under construction. [`Fleet::new`] has every lookup table filled
/// with ids 1 to 3 (named `<table>-<id>`: `pools-1`, `distros-2`, ...) and
/// nothing else; slaves start in silo 1 (every silo attribute 1).
#[derive(Debug, Clone)]
pub struct Fleet {
    dump: Dump,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Fleet {
    /// Lookups only.
    pub fn new() -> Self {
        let mut dump = Dump::default();
        for table in Table::ALL {
            dump.tables.insert(table, Vec::new());
        }
        let mut fleet = Self { dump };
        for table in Table::LOOKUPS {
            let id_column = table.id_column().unwrap_or("id");
            for id in 1..=3 {
                fleet.push(
                    table,
                    row(&[(id_column, int(id)), ("name", text(&format!("{table}-{id}")))]),
                );
            }
        }
        fleet
    }

    fn push(&mut self, table: Table, row: Row) {
        self.dump.tables.entry(table).or_default().push(row);
    }

    /// Adds master `id` (nickname `bm<id>`, fqdn `bm<id>.example.com`,
    /// pb_port `9000 + id`) to `pool`.
    pub fn master(&mut self, id: i64, pool: i64, enabled: bool) -> &mut Self {
        self.push(
            Table::Masters,
            row(&[
                ("masterid", int(id)),
                ("nickname", text(&format!("bm{id:02}"))),
                ("fqdn", text(&format!("bm{id:02}.example.com"))),
                ("http_port", int(8000 + id)),
                ("pb_port", int(9000 + id)),
                ("dcid", int(1)),
                ("poolid", int(pool)),
                ("enabled", Value::Bool(enabled)),
                ("notes", Value::Null),
            ]),
        );
        self
    }

    /// Adds slave `id` named `name` to `pool`, in silo 1, enabled, with no
    /// master.
    pub fn slave(&mut self, id: i64, name: &str, pool: i64) -> &mut Self {
        self.push(
            Table::Slaves,
            row(&[
                ("slaveid", int(id)),
                ("name", text(name)),
                ("distroid", int(1)),
                ("bitsid", int(1)),
                ("speedid", int(1)),
                ("purposeid", int(1)),
                ("dcid", int(1)),
                ("trustid", int(1)),
                ("envid", int(1)),
                ("poolid", int(pool)),
                ("basedir", text(&format!("/builds/{name}"))),
                ("locked_masterid", Value::Null),
                ("custom_tplid", Value::Null),
                ("enabled", Value::Bool(true)),
                ("notes", Value::Null),
                ("current_masterid", Value::Null),
            ]),
        );
        self
    }

    /// Sets one column of the row of `table` whose id is `id`.
    ///
    /// # Panics
    /// When there is no such row: a mistake in the test.
    pub fn set(&mut self, table: Table, id: i64, column: &str, value: Value) -> &mut Self {
        let id_column = table.id_column().unwrap_or("id");
        let row = self
            .dump
            .tables
            .get_mut(&table)
            .and_then(|rows| rows.iter_mut().find(|r| r.get(id_column) == Some(&Value::Int(id))))
            .unwrap_or_else(|| panic!("the fleet has no {table} row {id}"));
        row.insert(column.to_owned(), value);
        self
    }

    /// Adds a `slave_passwords` row; `distro` `None` is the pool's wildcard.
    pub fn password(&mut self, pool: i64, distro: Option<i64>, password: &str) -> &mut Self {
        self.push(
            Table::SlavePasswords,
            row(&[
                ("poolid", int(pool)),
                ("distroid", distro.map_or(Value::Null, int)),
                ("password", text(password)),
            ]),
        );
        self
    }

    /// Adds a tac template.
    pub fn template(&mut self, id: i64, name: &str, template: &str) -> &mut Self {
        self.push(
            Table::TacTemplates,
            row(&[("tplid", int(id)), ("name", text(name)), ("template", text(template))]),
        );
        self
    }

    /// The fleet as a dump, in dump order.
    pub fn dump(&self) -> Dump {
        let mut dump = self.dump.clone();
        dump.sort();
        dump
    }
}

/// One pool (1) with three enabled masters (1, 2, 3), a disabled one (4),
/// a wildcard password, and `slaves` slaves named `slave-<n>` in silo 1.
pub fn one_pool(slaves: i64) -> Fleet {
    let mut fleet = Fleet::new();
    fleet
        .master(1, 1, true)
        .master(2, 1, true)
        .master(3, 1, true)
        .master(4, 1, false)
        .password(1, None, "pool-1-secret");
    for n in 1..=slaves {
        fleet.slave(n, &format!("slave-{n}"), 1);
    }
    fleet
}

/// A fleet with something in every table: two pools with masters, slaves
/// in two silos, a locked, a disabled and a templated slave, wildcard and
/// distro passwords, notes with quotes and non-ASCII text.
pub fn varied() -> Fleet {
    let mut fleet = one_pool(6);
    fleet
        .master(5, 2, true)
        .master(6, 2, true)
        .template(1, "custom", "CUSTOM %(slavename)s on %(buildmaster_host)s")
        .password(1, Some(2), "pool-1-distro-2")
        .password(2, None, "pool-2-secret")
        .slave(7, "win-1", 1)
        .set(Table::Slaves, 7, "distroid", int(2))
        .slave(8, "win-2", 1)
        .set(Table::Slaves, 8, "distroid", int(2))
        .slave(9, "tst-1", 2)
        .slave(10, "tst-2", 2)
        .set(Table::Slaves, 10, "locked_masterid", int(4))
        .set(Table::Slaves, 10, "custom_tplid", int(1))
        .slave(11, "tst-3", 2)
        .set(Table::Slaves, 11, "enabled", Value::Bool(false))
        .set(
            Table::Slaves,
            11,
            "notes",
            text("bug 123: disabled by \"relops\" — don't 'enable'\\n"),
        )
        .set(Table::Masters, 6, "notes", text("Zürich ☃ 𝄞"));
    fleet
}
