//! Where the daemon renders tacs: stored templates on a small bounded pool
//! of blocking threads, each render with a time budget.
//!
//! Why: a template is code from the database. Validation refuses templates
//! that are slow or huge with worst-case values, but a template stored
//! before that check (an old database, an operator's SQL) can still take a
//! thread for as long as its fuel lasts. On the async workers that would
//! stall every request of the daemon; here it takes one of a few permits,
//! and its slave is answered "500 ... template ..." when the budget is
//! spent, whatever the thread is still doing. Built-in templates and the
//! disabled tac are the daemon's own code and render in microseconds: they
//! render inline and never wait for a permit, so a bad stored template can
//! never delay a slave that uses the default template.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use slavealloc_domain::ports::{TacBody, TacRequest};
use slavealloc_domain::{RenderError, RenderExecutor, TacRenderer};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Default for how many stored templates render at once: two threads, so
/// that even while both hold a bad template, the async workers (and the
/// built-in templates) keep a core.
pub const DEFAULT_RENDER_THREADS: usize = 2;

/// Default time budget of one batch's renders: well inside the default
/// 1.5 s `/gettac` deadline, far above the milliseconds a real tac takes.
pub const DEFAULT_RENDER_BUDGET: Duration = Duration::from_millis(750);

/// A [`RenderExecutor`] for the daemon: stored templates on
/// `tokio::task::spawn_blocking` behind a semaphore, with a time budget.
#[derive(Debug, Clone)]
pub struct BlockingRenderPool {
    permits: Arc<Semaphore>,
    threads: usize,
    budget: Duration,
}

impl Default for BlockingRenderPool {
    fn default() -> Self {
        BlockingRenderPool::new(DEFAULT_RENDER_THREADS, DEFAULT_RENDER_BUDGET)
    }
}

impl BlockingRenderPool {
    /// A pool of at most `threads` concurrent renders (at least 1), each
    /// batch's renders answered within `budget`.
    pub fn new(threads: usize, budget: Duration) -> Self {
        let threads = threads.max(1);
        BlockingRenderPool {
            permits: Arc::new(Semaphore::new(threads)),
            threads,
            budget,
        }
    }

    /// How many stored templates may render at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The time budget of one batch's renders.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

/// The stored template a request renders, if any (an empty one falls back
/// to the built-in default, as the renderer does).
fn stored_template(request: &TacRequest) -> Option<&str> {
    match &request.body {
        TacBody::Enabled { template: Some(t), .. } if !t.template.is_empty() => Some(&t.name),
        _ => None,
    }
}

fn failed(template: &str, message: String) -> RenderError {
    RenderError::Invalid {
        template: template.to_owned(),
        message,
    }
}

#[async_trait]
impl RenderExecutor for BlockingRenderPool {
    async fn render_all(
        &self,
        renderer: Arc<dyn TacRenderer>,
        requests: Vec<TacRequest>,
    ) -> Vec<Result<String, RenderError>> {
        let deadline = Instant::now() + self.budget;
        let budget_ms = self.budget.as_millis();
        // Every stored render is started before any is awaited, so they
        // share the budget instead of adding up.
        let pending: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let Some(name) = stored_template(&request).map(str::to_owned) else {
                    return Err(renderer.render(&request));
                };
                let permits = Arc::clone(&self.permits);
                let renderer = Arc::clone(&renderer);
                let task = tokio::spawn(async move {
                    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, permits.acquire_owned()).await else {
                        return None;
                    };
                    // The permit goes with the thread: it is free again only
                    // when the render really ends, so a runaway template
                    // can hold at most the pool's threads.
                    let render = tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        renderer.render(&request)
                    });
                    Some(tokio::time::timeout_at(deadline, render).await)
                });
                Ok((name, task))
            })
            .collect();
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            results.push(match p {
                Err(inline) => inline,
                Ok((name, task)) => match task.await {
                    Ok(Some(Ok(Ok(rendered)))) => rendered,
                    Ok(None) => Err(failed(
                        &name,
                        format!("no render thread was free within {budget_ms} ms (other templates are slow)"),
                    )),
                    Ok(Some(Err(_))) => Err(failed(&name, format!("it did not render within {budget_ms} ms"))),
                    Ok(Some(Ok(Err(_)))) | Err(_) => Err(failed(&name, "the render failed (panic)".to_owned())),
                },
            });
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::SystemTime;

    use slavealloc_domain::ports::{TacHeader, TacValues};
    use slavealloc_domain::TacTemplate;

    use super::*;

    /// Renders "slow" templates by blocking until released, others at once.
    struct Gate {
        open: Arc<AtomicBool>,
    }

    impl TacRenderer for Gate {
        fn render(&self, request: &TacRequest) -> Result<String, RenderError> {
            if stored_template(request) == Some("slow") {
                while !self.open.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            if stored_template(request) == Some("panics") {
                panic!("a renderer bug");
            }
            Ok(format!("tac for {:?}", stored_template(request)))
        }
    }

    fn request(template: Option<&str>) -> TacRequest {
        TacRequest {
            header: TacHeader {
                generated: SystemTime::UNIX_EPOCH,
                host: "h".into(),
            },
            body: TacBody::Enabled {
                template: template.map(|name| TacTemplate {
                    tplid: 1,
                    name: name.to_owned(),
                    template: "x".to_owned(),
                }),
                values: TacValues {
                    buildmaster_host: "m".into(),
                    port: 1,
                    slavename: "s".into(),
                    basedir: "/b".into(),
                    passwd: "p".into(),
                },
            },
        }
    }

    #[tokio::test]
    async fn a_stuck_template_fails_alone_and_builtins_never_wait() {
        let open = Arc::new(AtomicBool::new(false));
        let renderer: Arc<dyn TacRenderer> = Arc::new(Gate {
            open: Arc::clone(&open),
        });
        let pool = BlockingRenderPool::new(1, Duration::from_millis(200));
        let results = pool
            .render_all(
                Arc::clone(&renderer),
                vec![request(Some("slow")), request(None), request(Some("panics"))],
            )
            .await;
        open.store(true, Ordering::SeqCst);
        match &results[0] {
            Err(RenderError::Invalid { template, message }) => {
                assert_eq!(template, "slow");
                assert!(message.contains("did not render within 200 ms"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(results[1].as_deref(), Ok("tac for None"));
        // The one thread was held by the slow template.
        assert!(
            matches!(&results[2], Err(RenderError::Invalid { template, .. }) if template == "panics"),
            "{:?}",
            results[2]
        );
        // Once the stuck render ends its permit is back.
        let again = loop {
            let r = pool
                .render_all(Arc::clone(&renderer), vec![request(Some("fine"))])
                .await;
            if r[0].is_ok() {
                break r;
            }
        };
        assert_eq!(again[0].as_deref(), Ok("tac for Some(\"fine\")"));
    }

    #[tokio::test]
    async fn a_panicking_render_is_an_error_naming_its_template() {
        let renderer: Arc<dyn TacRenderer> = Arc::new(Gate {
            open: Arc::new(AtomicBool::new(true)),
        });
        let results = BlockingRenderPool::default()
            .render_all(renderer, vec![request(Some("panics"))])
            .await;
        assert!(
            matches!(&results[0], Err(RenderError::Invalid { template, message }) if template == "panics" && message.contains("panic")),
            "{results:?}"
        );
    }
}
