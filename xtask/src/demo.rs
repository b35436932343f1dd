//! `cargo xtask demo`: the quickest way to see spans. Builds the daemon, starts a small HTTP/1.1
//! server and a client loop (both in this process, on loopback), and runs beyla-rs against the
//! server with the text trace printer.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Answer one connection's requests (keep-alive) until the client closes it.
fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, text) = match path {
            p if p.starts_with("/users/") => ("200 OK", "{\"user\":\"ok\"}"),
            "/slow" => {
                thread::sleep(Duration::from_millis(50));
                ("200 OK", "slow")
            }
            "/missing" => ("404 Not Found", "not found"),
            "/fail" => ("500 Internal Server Error", "boom"),
            _ => ("200 OK", "hello from the beyla-rs demo"),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn client_loop(port: u16, stop: Arc<AtomicBool>) {
    let paths = [
        "/",
        "/users/42",
        "/slow",
        "/missing",
        "/fail",
        "/users/7?token=secret",
    ];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            // A few keep-alive requests per connection.
            for _ in 0..3 {
                let path = paths[i % paths.len()];
                i += 1;
                let req = format!("GET {path} HTTP/1.1\r\nHost: demo.local:{port}\r\n\r\n");
                if s.write_all(req.as_bytes()).is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
            }
        }
        thread::sleep(Duration::from_millis(700));
    }
}

pub fn run(seconds: Option<u64>) -> Result<()> {
    if !crate::is_root() {
        bail!("the demo loads eBPF programs and needs root (or CAP_BPF, CAP_PERFMON, …)");
    }
    let bin = crate::build(true)?;
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the demo server")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || serve(s));
        }
    });
    println!(
        "demo server on 127.0.0.1:{port}; starting beyla-rs with BEYLA_OPEN_PORT={port} \
         (Ctrl-C to stop{})",
        seconds
            .map(|s| format!(", or after {s}s"))
            .unwrap_or_default()
    );
    let mut daemon = Command::new(&bin)
        .env("BEYLA_OPEN_PORT", port.to_string())
        .env("BEYLA_TRACE_PRINTER", "text")
        .env("BEYLA_SERVICE_NAME", "demo")
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    // The daemon finds the already-running server by scanning /proc; give it a moment.
    thread::sleep(Duration::from_secs(2));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        thread::spawn(move || client_loop(port, stop))
    };
    let started = Instant::now();
    loop {
        if let Some(status) = daemon.try_wait()? {
            stop.store(true, Ordering::Relaxed);
            let _ = client.join();
            if status.success() {
                return Ok(());
            }
            bail!("beyla-rs exited with {status}");
        }
        if seconds.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            // SAFETY: signalling our own child.
            unsafe { libc_kill(daemon.id() as i32, 15) };
            let status = daemon.wait()?;
            stop.store(true, Ordering::Relaxed);
            let _ = client.join();
            if !status.success() {
                bail!("beyla-rs exited with {status}");
            }
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
