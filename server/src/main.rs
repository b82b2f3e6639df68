//! The `cleanroom` binary: parse configuration, start, serve, shut down.
//! See the library's docs (`server/src/lib.rs`) for the design.

use std::process::ExitCode;

use axum::serve::ListenerExt as _;
use leptos::prelude::LeptosOptions;
use server::config::{Config, ConfigExit};

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigExit::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(ConfigExit::Invalid(line)) => {
            eprintln!("cleanroom: {line}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn,fred=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        server::config::LogFormat::Json => logs.json().init(),
        // Colour codes only where a person reads a terminal.
        server::config::LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cleanroom: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

/// Leptos' own settings from `Leptos.toml` (LEPTOS_* variables override),
/// with the listen address from our configuration.
fn leptos_options(config: &Config) -> LeptosOptions {
    let file = std::path::Path::new("Leptos.toml");
    let loaded = if file.exists() {
        Some(leptos::config::get_configuration(Some("Leptos.toml")))
    } else if std::env::var_os("LEPTOS_OUTPUT_NAME").is_some() {
        Some(leptos::config::get_configuration(None))
    } else {
        None
    };
    let defaults =
        || LeptosOptions::builder().output_name("cleanroom").site_root("target/site").site_pkg_dir("pkg").build();
    let mut options = match loaded {
        Some(Ok(conf)) => conf.leptos_options,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "Leptos settings not read; using defaults");
            defaults()
        }
        None => defaults(),
    };
    options.site_addr = config.addr;
    if let Some(found) = site_near_binary(&options) {
        options.site_root = found.into();
    }
    // A site built with content-hashed names comes with its hash file
    // beside the binary: then the pages name the hashed files, whichever
    // directory the server runs from.
    if !options.hash_files && beside_binary(options.hash_file.as_ref()).is_some_and(|f| f.is_file()) {
        options.hash_files = true;
    }
    options
}

fn beside_binary(name: &str) -> Option<std::path::PathBuf> {
    Some(std::env::current_exe().ok()?.parent()?.join(name))
}

/// Whether `pkg` holds the site's script (`{output}.js`, or with a content
/// hash `{output}.{hash}.js`).
fn has_script(pkg: &std::path::Path, output: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(pkg) else { return false };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.strip_prefix(output)
            .and_then(|rest| rest.strip_suffix(".js"))
            .is_some_and(|mid| mid.is_empty() || (mid.starts_with('.') && !mid[1..].contains('.')))
    })
}

/// A relative site root that is not there from this working directory is
/// looked for next to the binary (`target/site` beside `target/debug/`, as
/// cargo-leptos lays it out), then in the workspace the binary was built
/// from (when the build's target directory is elsewhere), so the server
/// started from anywhere serves its pages' WASM and CSS. `None`: keep the
/// configured root.
fn site_near_binary(options: &LeptosOptions) -> Option<String> {
    let root = std::path::Path::new(options.site_root.as_ref());
    if root.is_absolute() || root.join(options.site_pkg_dir.as_ref()).is_dir() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let name = root.file_name()?;
    let near_binary = exe.ancestors().skip(1).take(3).map(|dir| dir.join(name));
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|ws| ws.join(root));
    let found = near_binary
        .chain(workspace)
        .find(|candidate| has_script(&candidate.join(options.site_pkg_dir.as_ref()), &options.output_name))?;
    tracing::info!(site = %found.display(), "site root found beside the binary or its build");
    Some(found.display().to_string())
}

async fn run(mut config: Config) -> ExitCode {
    // Bound first, so that with `--addr …:0` the port the system chose is
    // the one the node is known by (its derived public URL, the site).
    // Connections that come before the server is ready wait in the backlog.
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cleanroom: CLEANROOM_ADDR (--addr) {}: {e}", config.addr);
            return ExitCode::from(2);
        }
    };
    if let Ok(bound) = listener.local_addr() {
        config.addr = bound;
    }
    let addr = config.addr;
    let state = match server::start(&config, leptos_options(&config), &config.store_prefix).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cleanroom: {e}");
            return ExitCode::from(2);
        }
    };
    let served = match state.tls.clone() {
        Some(tls) => {
            let tls = match server::tls::TlsListener::new(listener, tls, &state.tasks, state.shutdown.child_token()) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("cleanroom: CLEANROOM_ADDR (--addr) {}: {e}", config.addr);
                    return ExitCode::from(2);
                }
            };
            tracing::info!(%addr, "listening on https://{addr}");
            // `tap_io` only to get the peer address as `ConnectInfo<SocketAddr>`.
            serve(tls.tap_io(|_| {}), &state).await
        }
        None => {
            tracing::info!(%addr, "listening on http://{addr}");
            serve(listener.tap_io(|_| {}), &state).await
        }
    };
    server::shutdown(&state).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Serves until a shutdown signal, ending the sessions first.
async fn serve<L, F>(listener: axum::serve::TapIo<L, F>, state: &server::AppState) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    F: FnMut(&mut L::Io) + Send + 'static,
{
    let router = server::router(state);
    let for_signal = state.clone();
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            // End sessions first, so their sockets close and serving can stop.
            server::shutdown(&for_signal).await;
        })
        .await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
