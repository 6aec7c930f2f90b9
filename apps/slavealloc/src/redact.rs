//! The one place that makes a database URL fit for a log line or an error
//! message: its password, in the user part or in the query
//! (`?password=`, `?sslpassword=`), becomes `***`.

/// Query parameters whose value is a secret.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword", "pass", "token", "secret"];

/// `url` with every password it holds replaced by `***`.
pub fn url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    match query {
        None => base,
        Some(q) => {
            let q: Vec<String> = q
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", q.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_stay_out_of_logs_and_messages() {
        assert_eq!(
            url("mysql://slavealloc:s3cret@db.example.com:3306/slavealloc"),
            "mysql://slavealloc:***@db.example.com:3306/slavealloc"
        );
        assert_eq!(
            url("postgres://u@db/x?sslmode=verify-full&password=s3cret&sslrootcert=/etc/ca.pem"),
            "postgres://u@db/x?sslmode=verify-full&password=***&sslrootcert=/etc/ca.pem"
        );
        assert_eq!(
            url("postgres://u:p%40ss@db/x?PASSWORD=y"),
            "postgres://u:***@db/x?PASSWORD=***"
        );
        for kept in [
            "sqlite:slavealloc.db",
            "sqlite://slavealloc.db",
            "mysql://root@127.0.0.1:3306",
            "postgres://db.example.com/x",
            "mysql://root@db",
        ] {
            assert_eq!(url(kept), kept);
        }
    }
}
