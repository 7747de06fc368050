//! A minimal Lambda Runtime API (the parts lambda_runtime uses), so the release `bootstrap` runs
//! as a real process exactly as in Lambda, and each invocation is timed where Lambda would time
//! it: from handing out the event to receiving the response.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot};

/// How an invocation ended, and when.
pub struct Completion {
    pub ok: bool,
    pub body: Vec<u8>,
    pub handed_out: Instant,
    pub completed: Instant,
}

struct Invocation {
    id: String,
    body: Vec<u8>,
    done: oneshot::Sender<Completion>,
}

struct Pending {
    done: oneshot::Sender<Completion>,
    handed_out: Instant,
}

pub struct RuntimeApi {
    pub addr: SocketAddr,
    queue: mpsc::UnboundedSender<Invocation>,
    next_id: std::sync::atomic::AtomicU64,
}

struct Shared {
    queue: Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl RuntimeApi {
    pub async fn start() -> io::Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (queue, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(receiver),
            pending: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A function process killed between invocations resets its connection.
                    if let Err(error) = serve(stream, shared).await
                        && error.kind() != io::ErrorKind::ConnectionReset
                        && error.kind() != io::ErrorKind::UnexpectedEof
                    {
                        eprintln!("bench: runtime API connection: {error}");
                    }
                });
            }
        });
        Ok(RuntimeApi {
            addr,
            queue,
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Queues `event` for the function and waits for its answer (or `limit`).
    pub async fn invoke(
        &self,
        event: &serde_json::Value,
        limit: Duration,
    ) -> io::Result<Completion> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        let invocation = Invocation {
            id: format!("bench-{n}"),
            body: serde_json::to_vec(event)?,
            done,
        };
        self.queue
            .send(invocation)
            .map_err(|_| io::Error::other("runtime API stopped"))?;
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(completion)) => Ok(completion),
            Ok(Err(_)) => Err(io::Error::other("invocation dropped")),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
        }
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                let value = value.trim();
                if name == "content-length" {
                    length = value.parse().unwrap_or(0);
                } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let body = if chunked {
            read_chunked(&mut reader).await?
        } else {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await?;
            body
        };
        let received = Instant::now();

        if method == "GET" && path == "/2018-06-01/runtime/invocation/next" {
            let Some(invocation) = shared.queue.lock().await.recv().await else {
                return Ok(());
            };
            let deadline_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                + 5_000;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 lambda-runtime-aws-request-id: {}\r\n\
                 lambda-runtime-deadline-ms: {deadline_ms}\r\n\
                 lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:bench\r\n\
                 lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n\
                 content-length: {}\r\n\r\n",
                invocation.id,
                invocation.body.len()
            );
            let handed_out = Instant::now();
            shared.pending.lock().await.insert(
                invocation.id.clone(),
                Pending {
                    done: invocation.done,
                    handed_out,
                },
            );
            write.write_all(head.as_bytes()).await?;
            write.write_all(&invocation.body).await?;
        } else if method == "POST" && path.starts_with("/2018-06-01/runtime/invocation/") {
            let rest = &path["/2018-06-01/runtime/invocation/".len()..];
            let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(pending) = shared.pending.lock().await.remove(id) {
                let _ = pending.done.send(Completion {
                    ok: kind == "response",
                    body,
                    handed_out: pending.handed_out,
                    completed: received,
                });
            }
            write
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                .await?;
        } else if method == "POST" && path == "/2018-06-01/runtime/init/error" {
            eprintln!("bench: init error: {}", String::from_utf8_lossy(&body));
            write
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                .await?;
        } else {
            write
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await?;
        }
    }
}

async fn read_chunked<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).await?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).await?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}
