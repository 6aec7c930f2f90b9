//! A real nginx running the deployment's sites, as root or not: a wrapper
//! `nginx.conf` keeps every file nginx writes (pid, logs, temporary
//! bodies) in the test's directory and includes the sites.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{run_bounded, wait_until, ChildGuard};
use crate::Result;

/// `nginx -t` and nginx's start take milliseconds; the bound only ends one
/// that hangs.
const LIMIT: Duration = Duration::from_secs(60);

/// A running nginx, stopped when dropped.
#[derive(Debug)]
pub struct Nginx {
    dir: PathBuf,
    _guard: ChildGuard,
}

impl Nginx {
    /// Writes `dir/nginx.conf` including `sites`, checks it with
    /// `nginx -t` (an error names the site's fault), starts nginx on it
    /// and waits until every port of `ports` accepts connections.
    pub fn start(dir: &Path, sites: &[PathBuf], ports: &[u16]) -> Result<Nginx> {
        let conf = wrapper_conf(dir, sites)?;
        let prefix = format!("{}/", dir.display());
        let checked = run_bounded(
            "nginx -t",
            Command::new("nginx")
                .arg("-t")
                .arg("-c")
                .arg(&conf)
                .args(["-p", &prefix]),
            &dir.join("nginx-t.log"),
            LIMIT,
        )?;
        if !checked.status.success() {
            return Err(format!("nginx -t: {}", checked.output));
        }
        let guard = ChildGuard::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-c")
                .arg(&conf)
                .args(["-p", &prefix])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let nginx = Nginx {
            dir: dir.to_owned(),
            _guard: guard,
        };
        for port in ports {
            wait_until("nginx to listen", LIMIT, || {
                Ok(std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok().then_some(()))
            })
            .map_err(|e| format!("{e}\n{}", nginx.error_log()))?;
        }
        Ok(nginx)
    }

    /// Its error log, which says why a request was passed to another
    /// upstream or failed.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// The deployment's cluster site (`slavealloc-cluster.conf`), made to run
/// here: listening on 127.0.0.1:`listen`, proxying to `daemons` (`http://`
/// URLs, as many as the site names) instead of app1..3.example.com:1080.
/// Written to `dir/cluster.conf`.
///
/// # Errors
/// When the site no longer names its upstreams or its port as expected.
pub fn cluster_site(dir: &Path, listen: u16, daemons: &[String]) -> Result<PathBuf> {
    let shipped = crate::workspace::repo_dir().join("apps/slavealloc/deploy/nginx/slavealloc-cluster.conf");
    let mut site = fs::read_to_string(&shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
    for (i, daemon) in daemons.iter().enumerate() {
        let upstream = format!("server app{}.example.com:1080 ", i + 1);
        if !site.contains(&upstream) {
            return Err(format!("the cluster site does not name {upstream}"));
        }
        site = site.replace(&upstream, &format!("server {} ", daemon.trim_start_matches("http://")));
    }
    if !site.contains("listen 80;") {
        return Err("the cluster site does not listen on port 80".to_owned());
    }
    let site = site
        .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"))
        .replace("listen [::]:80;", "");
    let path = dir.join("cluster.conf");
    fs::write(&path, site).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn wrapper_conf(dir: &Path, sites: &[PathBuf]) -> Result<PathBuf> {
    let d = dir.display();
    let includes: String = sites.iter().map(|s| format!("include {};\n", s.display())).collect();
    let conf = dir.join("nginx.conf");
    let text = format!(
        "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         worker_processes 2;\nworker_rlimit_nofile 65536;\nevents {{ worker_connections 16384; }}\nhttp {{\n\
         access_log {d}/access.log;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         {includes}}}\n"
    );
    fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    Ok(conf)
}
