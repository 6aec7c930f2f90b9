//! The storage contract suite on each SQL backend: one test per case and
//! backend, each on its own fresh database.

mod common;

mod sqlite {
    use slavealloc_store_sql::Backend;

    use crate::common::FreshDatabases;

    slavealloc_store_contract::contract_tests!(FreshDatabases::new(Backend::Sqlite));
}

mod mariadb {
    use slavealloc_store_sql::Backend;

    use crate::common::FreshDatabases;

    slavealloc_store_contract::contract_tests!(FreshDatabases::new(Backend::MySql));
}

mod postgres {
    use slavealloc_store_sql::Backend;

    use crate::common::FreshDatabases;

    slavealloc_store_contract::contract_tests!(FreshDatabases::new(Backend::Postgres));
}
