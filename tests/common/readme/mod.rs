//! The README as a test script: its fenced ```sh blocks and the ```yaml configs they use,
//! split into steps, and the checks of each step's documented status and output.
//!
//! Conventions the README follows (its "Conventions of the examples" section says so):
//! - a block whose first line is `# (not run by tests/readme.rs: ...)` is skipped;
//! - a ```yaml block starts with `# NAME.yaml` and is saved under that name when reached;
//! - a command may span lines ending in `\`; the comment lines right after it that start
//!   with `{` or `[` (a JSON answer), a three-digit status (optionally followed by the
//!   JSON answer), `> ` (a line of output) or `exit ` (the exit status) are what it must
//!   print; other comments are prose;
//! - `# Ctrl-C ... kvs run NAME` stops that foreground node with SIGINT.
//!
//! In a JSON answer and a `> ` line, `...` stands for any text; in a JSON answer, the
//! string `"..."` for any value, a number for any number, and an array ending in `"..."` for that prefix and anything after it; all else
//! (keys, `true`, `null`, the rest of strings, array lengths) must match. Without a status, every request of a step must answer 2xx, and
//! without `exit`, the step must exit 0.

pub mod session;

use serde_json::Value;

/// The marker that skips a block.
pub const SKIP: &str = "# (not run by tests/readme.rs";

/// A fenced block: its language, text and first line's number in the README.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub lang: String,
    pub text: String,
    pub line: usize,
}

/// The fenced blocks of `markdown`, in order.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in markdown.lines().enumerate() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(info)) => {
                let lang = info.split_whitespace().next().unwrap_or("").to_owned();
                open = Some(Block {
                    lang,
                    text: String::new(),
                    line: n + 2,
                });
            }
            (Some(block), Some(_)) => out.push(block),
            (Some(mut block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    out
}

/// What a step must print or answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The last request's status, and its JSON answer when given.
    Status(u16, Option<Value>),
    /// The next JSON document of the output.
    Json(Value),
    /// A line of output (`...` for any text).
    Line(String),
    /// The exit status.
    Exit(i32),
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Save a config file.
    Save { file: String, text: String },
    /// Run a shell command and check what it printed.
    Run {
        command: String,
        expect: Vec<Expect>,
        line: usize,
    },
    /// Ctrl-C in the terminal of `kvs run NAME`.
    Interrupt { name: String, line: usize },
}

/// The steps of the runnable blocks, in order.
pub fn steps(blocks: &[Block]) -> Result<Vec<Step>, String> {
    let mut out = Vec::new();
    for block in blocks.iter().filter(|b| !b.text.starts_with(SKIP)) {
        match block.lang.as_str() {
            "sh" => out.extend(shell_steps(block)?),
            "yaml" => out.push(save_step(block)?),
            _ => {}
        }
    }
    Ok(out)
}

fn save_step(block: &Block) -> Result<Step, String> {
    let first = block.text.lines().next().unwrap_or("");
    let file = first
        .strip_prefix("# ")
        .and_then(|rest| rest.split_whitespace().next())
        .map(|f| f.trim_end_matches(','))
        .filter(|f| f.ends_with(".yaml"))
        .ok_or_else(|| format!("README line {}: a yaml block names its file", block.line))?;
    Ok(Step::Save {
        file: file.to_owned(),
        text: block.text.clone(),
    })
}

fn shell_steps(block: &Block) -> Result<Vec<Step>, String> {
    let mut out: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for (i, raw) in block.text.lines().enumerate() {
        let line = block.line + i;
        if !pending.is_empty() || !raw.trim_start().starts_with('#') {
            if raw.trim().is_empty() && pending.is_empty() {
                continue;
            }
            pending.push_str(raw);
            pending.push('\n');
            if !raw.ends_with('\\') {
                out.push(Step::Run {
                    command: std::mem::take(&mut pending),
                    expect: Vec::new(),
                    line,
                });
            }
            continue;
        }
        let comment = raw.trim_start().trim_start_matches('#').trim();
        if let Some(name) = interrupted(comment) {
            out.push(Step::Interrupt { name, line });
        } else if let Some(expect) = expectation(comment)? {
            match out.last_mut() {
                Some(Step::Run { expect: list, .. }) => list.push(expect),
                _ => return Err(format!("README line {line}: an output without a command")),
            }
        }
    }
    Ok(out)
}

/// `Ctrl-C ... kvs run NAME`: the name.
fn interrupted(comment: &str) -> Option<String> {
    let rest = comment.strip_prefix("Ctrl-C")?;
    let (_, after) = rest.split_once("kvs run ")?;
    let name = after.split(|c: char| c.is_whitespace() || c == '`' || c == ')');
    name.into_iter().next().map(str::to_owned)
}

/// The expectation a comment states, if it states one.
fn expectation(comment: &str) -> Result<Option<Expect>, String> {
    let json = |text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| format!("{text:?} is not JSON: {e}"))
    };
    if comment.starts_with('{') || comment.starts_with('[') {
        return json(comment).map(|v| Some(Expect::Json(v)));
    }
    if let Some(line) = comment.strip_prefix("> ") {
        return Ok(Some(Expect::Line(line.to_owned())));
    }
    if let Some(code) = comment.strip_prefix("exit ") {
        let code = code
            .trim()
            .parse()
            .map_err(|_| format!("bad exit {code:?}"))?;
        return Ok(Some(Expect::Exit(code)));
    }
    let (head, rest) = comment.split_once(' ').unwrap_or((comment, ""));
    match head.parse::<u16>() {
        Ok(status) if head.len() == 3 && (100..600).contains(&status) => {
            let body = match rest.trim() {
                "" => None,
                text => Some(json(text)?),
            };
            Ok(Some(Expect::Status(status, body)))
        }
        _ => Ok(None),
    }
}

/// What a step did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
    /// The status of each HTTP request, in order.
    pub statuses: Vec<u16>,
}

/// Checks `outcome` against `expect`; `Err` says what differs.
pub fn check(outcome: &Outcome, expect: &[Expect]) -> Result<(), String> {
    let wanted_exit = expect.iter().find_map(|e| match e {
        Expect::Exit(code) => Some(*code),
        _ => None,
    });
    if outcome.exit != wanted_exit.unwrap_or(0) {
        return Err(format!("exit status {}", outcome.exit));
    }
    check_statuses(outcome, expect)?;
    check_json(outcome, expect)?;
    check_lines(outcome, expect)
}

fn check_statuses(outcome: &Outcome, expect: &[Expect]) -> Result<(), String> {
    let wanted = expect.iter().find_map(|e| match e {
        Expect::Status(status, body) => Some((*status, body)),
        _ => None,
    });
    let Some((status, body)) = wanted else {
        return match outcome.statuses.iter().find(|s| !(200..300).contains(*s)) {
            Some(bad) => Err(format!("status {bad}, documented as a success")),
            None => Ok(()),
        };
    };
    if outcome.statuses.last() != Some(&status) {
        return Err(format!(
            "statuses {:?}, documented {status}",
            outcome.statuses
        ));
    }
    match body {
        Some(body) => compare_documents(std::slice::from_ref(body), &outcome.stdout),
        None => Ok(()),
    }
}

fn check_json(outcome: &Outcome, expect: &[Expect]) -> Result<(), String> {
    let wanted: Vec<Value> = expect
        .iter()
        .filter_map(|e| match e {
            Expect::Json(v) => Some(v.clone()),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    compare_documents(&wanted, &outcome.stdout)
}

/// The JSON documents of `stdout` match `wanted`, one for one.
fn compare_documents(wanted: &[Value], stdout: &str) -> Result<(), String> {
    let found: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .collect();
    let found = found.map_err(|e| format!("the output is not JSON ({e})"))?;
    if found.len() != wanted.len() {
        return Err(format!(
            "{} JSON documents printed, {} documented",
            found.len(),
            wanted.len()
        ));
    }
    for (want, got) in wanted.iter().zip(&found) {
        if !json_matches(want, got) {
            return Err(format!("printed {got}, documented {want}"));
        }
    }
    Ok(())
}

fn check_lines(outcome: &Outcome, expect: &[Expect]) -> Result<(), String> {
    let printed = format!("{}\n{}", outcome.stdout, outcome.stderr);
    let mut lines = printed.lines().map(|l| l.trim_end_matches('\r'));
    for wanted in expect.iter().filter_map(|e| match e {
        Expect::Line(l) => Some(l),
        _ => None,
    }) {
        if !lines.any(|line| glob(wanted, line)) {
            return Err(format!("no line like {wanted:?} (in order) in the output"));
        }
    }
    Ok(())
}

/// Whether `actual` matches the documented `wanted` (see the module doc).
pub fn json_matches(wanted: &Value, actual: &Value) -> bool {
    match (wanted, actual) {
        (Value::String(w), _) if w == "..." => true,
        (Value::String(w), Value::String(a)) => glob(w, a),
        (Value::Number(_), Value::Number(_)) => true,
        (Value::Array(w), Value::Array(a)) => arrays_match(w, a),
        (Value::Object(w), Value::Object(a)) => {
            w.len() == a.len()
                && w.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|got| json_matches(v, got)))
        }
        _ => wanted == actual,
    }
}

fn arrays_match(wanted: &[Value], actual: &[Value]) -> bool {
    let open = wanted.last() == Some(&Value::String("...".into()));
    let head = if open {
        &wanted[..wanted.len() - 1]
    } else {
        wanted
    };
    let lengths = if open {
        actual.len() >= head.len()
    } else {
        actual.len() == head.len()
    };
    lengths && head.iter().zip(actual).all(|(w, a)| json_matches(w, a))
}

/// Whether `text` matches `pattern`, where `...` stands for any text.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split("...");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// `text` with each port of `ports` (`(documented, used)`) replaced where it stands as a
/// number of its own.
pub fn substitute_ports(text: &str, ports: &[(u16, u16)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        let replaced = ports
            .iter()
            .find(|(from, _)| from.to_string() == *digits)
            .map(|(_, to)| to.to_string());
        out.push_str(replaced.as_deref().unwrap_or(digits));
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}
