//! A real SMTP server inside the test process (mailin-embedded on `127.0.0.1:0`) that keeps every
//! message it accepts and can be told to refuse, plus a small MIME reader for what lettre sends.
//!
//! mailin-embedded's `serve` runs until the process ends (it has no stop), so each sink leaves
//! an idle thread pool behind; that is harmless in a test binary.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, response};

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed.
    pub data: Vec<u8>,
}

/// How the sink answers at the end of `DATA`.
const ACCEPT: u8 = 0;
const TRANSIENT: u8 = 1;
const PERMANENT: u8 = 2;

#[derive(Default)]
struct State {
    mails: Mutex<Vec<ReceivedMail>>,
    mode: AtomicU8,
    fail_next: AtomicUsize,
    refused: AtomicUsize,
}

/// Handle to a running sink.
pub struct SmtpSink {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Clone)]
struct Capture {
    state: Arc<State>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Capture {
    fn refusal(&self) -> Option<Response> {
        let state = &self.state;
        let fail_once = state
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let refusal = match state.mode.load(Ordering::SeqCst) {
            _ if fail_once => response::INTERNAL_ERROR,
            TRANSIENT => response::INTERNAL_ERROR,
            PERMANENT => response::TRANSACTION_FAILED,
            _ => return None,
        };
        state.refused.fetch_add(1, Ordering::SeqCst);
        Some(refusal)
    }
}

impl Handler for Capture {
    // Refusals answer the DATA command: mailin 0.6.5 stays in its data state after an error at
    // the end of the data, so the client's next command would be read as message text.
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if let Some(refusal) = self.refusal() {
            return refusal;
        }
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = ReceivedMail {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: std::mem::take(&mut self.data),
        };
        self.state
            .mails
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(mail);
        response::OK
    }
}

impl SmtpSink {
    /// Starts a sink on a free loopback port.
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let addr = listener.local_addr().expect("sink address");
        let state = Arc::new(State::default());
        let mut server = Server::new(Capture {
            state: state.clone(),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        });
        server
            .with_name("sink.test")
            .with_num_threads(4)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                eprintln!("smtp sink stopped: {e}");
            }
        });
        SmtpSink { addr, state }
    }

    /// A plain-text loopback URL the mailer accepts.
    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    /// Messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.state
            .mails
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` messages arrived or `timeout` passed; returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let until = Instant::now() + timeout;
        loop {
            let mails = self.messages();
            if mails.len() >= n || Instant::now() >= until {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// While set, every message is refused with 451 (transient).
    pub fn set_failing(&self, failing: bool) {
        let mode = if failing { TRANSIENT } else { ACCEPT };
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    /// While set, every message is refused with 554 (permanent).
    pub fn set_rejecting(&self, rejecting: bool) {
        let mode = if rejecting { PERMANENT } else { ACCEPT };
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    /// The next `n` messages are refused with 451, then the sink accepts again.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Messages refused so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

/// One MIME part: headers (unfolded) and the decoded body.
#[derive(Debug, Clone)]
pub struct MimePart {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl MimePart {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lower case, without parameters.
    pub fn content_type(&self) -> String {
        self.header("Content-Type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl ReceivedMail {
    /// The whole message as text.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Top-level headers and the undecoded body.
    pub fn top(&self) -> MimePart {
        let (headers, body) = split_entity(&self.data);
        MimePart {
            headers,
            body: body.to_vec(),
        }
    }

    pub fn subject(&self) -> Option<String> {
        self.top().header("Subject").map(str::to_owned)
    }

    /// The leaf parts of the message, bodies decoded (7bit, quoted-printable or base64).
    pub fn parts(&self) -> Vec<MimePart> {
        let mut out = Vec::new();
        collect_parts(&self.data, &mut out);
        out
    }

    /// The decoded body of the first part of type `mime` (e.g. `text/html`).
    pub fn part(&self, mime: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|p| p.content_type() == mime)
            .map(|p| p.text())
    }

    pub fn text_part(&self) -> Option<String> {
        self.part("text/plain")
    }

    pub fn html_part(&self) -> Option<String> {
        self.part("text/html")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits an entity into unfolded headers and its raw body.
fn split_entity(data: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let (head, body) = match find(data, b"\r\n\r\n") {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => (data, &data[data.len()..]),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in String::from_utf8_lossy(head).split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

fn collect_parts(entity: &[u8], out: &mut Vec<MimePart>) {
    let (headers, body) = split_entity(entity);
    let part = MimePart {
        headers,
        body: Vec::new(),
    };
    let content_type = part
        .header("Content-Type")
        .unwrap_or("text/plain")
        .to_owned();
    if let Some(b) = boundary(&content_type) {
        let delimiter = format!("--{b}");
        let text = body;
        let mut rest = text;
        // Skip the preamble, then take each part up to the next delimiter line.
        if let Some(i) = find(rest, delimiter.as_bytes()) {
            rest = &rest[i + delimiter.len()..];
        }
        while !rest.starts_with(b"--") {
            let rest_start = rest.strip_prefix(b"\r\n").unwrap_or(rest);
            let end =
                find(rest_start, format!("\r\n{delimiter}").as_bytes()).unwrap_or(rest_start.len());
            collect_parts(&rest_start[..end], out);
            if end >= rest_start.len() {
                break;
            }
            rest = &rest_start[end + 2 + delimiter.len()..];
        }
        return;
    }
    let encoding = part
        .header("Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => decode_base64(body),
        _ => body.to_vec(),
    };
    out.push(MimePart {
        headers: part.headers,
        body,
    });
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` bytes and `=` soft line breaks.
pub fn decode_quoted_printable(body: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'=' {
            if body[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            let digits = (
                body.get(i + 1).and_then(|&b| hex(b)),
                body.get(i + 2).and_then(|&b| hex(b)),
            );
            if let (Some(h), Some(l)) = digits {
                out.push((h << 4) | l);
                i += 3;
                continue;
            }
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

/// Base64 (RFC 4648) ignoring line breaks; hand-written because no base64 crate is a
/// dependency of the tests.
pub fn decode_base64(body: &[u8]) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for v in body.iter().filter_map(|&c| value(c)) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn decoders_handle_what_lettre_sends() {
    assert_eq!(decode_base64(b"R3LDvMOfZQ==\r\n"), "Grüße".as_bytes());
    assert_eq!(decode_base64(b"YWJj\r\nZA=="), b"abcd");
    assert_eq!(
        decode_quoted_printable(b"Gr=C3=BC=C3=9Fe a=3Db =\r\nnext"),
        "Grüße a=b next".as_bytes()
    );
}

#[test]
fn multipart_messages_are_split_into_decoded_parts() {
    let data = b"Subject: hi\r\n there\r\nContent-Type: multipart/alternative;\r\n boundary=\"XyZ\"\r\n\r\n\
--XyZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZQ==\r\n\
--XyZ\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>a=3Db</p>\r\n\
--XyZ--\r\n";
    let mail = ReceivedMail {
        from: String::new(),
        to: Vec::new(),
        data: data.to_vec(),
    };
    assert_eq!(mail.subject().as_deref(), Some("hi there"));
    assert_eq!(mail.text_part().as_deref(), Some("Grüße"));
    assert_eq!(mail.html_part().as_deref(), Some("<p>a=b</p>"));
    assert_eq!(mail.parts().len(), 2);
}
