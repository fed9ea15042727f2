//! Ctrl-C and SIGTERM for `train`, `serve` and `join` (docs/DESIGN.md "Checkpoint and
//! resume"): a future that completes at the first of them, which the QUIC shells take as
//! their stop signal (`run_server_with`, `run_client_with`). What stopping means is the
//! coordinator's decision ([`gelunet_server::Coordinator::interrupt`]), not this module's.

/// Completes at the first Ctrl-C (SIGINT) or, on Unix, SIGTERM. If a handler cannot be
/// installed, that signal is not waited for (the process keeps the default behaviour).
pub async fn interrupted() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
