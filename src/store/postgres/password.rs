//! The database password when the URL has none, found where libpq finds it, so that it need
//! never be written on a command line (where `ps` shows it for the process's whole life).
//!
//! In libpq's order: the URL's own `password`; else `PGPASSWORD`; else the first matching line
//! of a password file: the URL's `passfile` parameter, else `PGPASSFILE`, else `~/.pgpass`.
//! A password file has lines `hostname:port:database:username:password`; a field `*` matches
//! anything, `\` escapes a `:` or a `\`, lines starting with `#` are comments. As libpq does,
//! the file is ignored unless it is a plain file with no group or world permissions (mode
//! `0600` or stricter), and an empty password counts as none.
//!
//! Nothing here reports an error: a password file that is missing, unreadable or too open is
//! skipped, as libpq skips it, and the connection then fails for want of a password. No
//! password ever reaches an error or a log.
//!
//! The URL is read here once for every parameter tokio-postgres does not know
//! ([`OWN_PARAMS`]: `passfile`, and the TLS settings `sslmode` and `sslrootcert` that
//! `super::tls` applies), so that there is one reader of both URL forms.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio_postgres::config::Host;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// A variable of the environment: the process's, or a test's.
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process's environment.
pub(super) fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The URL parameters that tokio-postgres does not know, or knows only in part, taken out
/// before it parses the rest: `passfile` (read here), `sslmode` (it knows `disable`, `prefer`
/// and `require`, not `verify-ca` and `verify-full`) and `sslrootcert` (read by `super::tls`).
pub(super) const OWN_PARAMS: [&str; 3] = ["passfile", "sslmode", "sslrootcert"];

/// Parameters taken out of a URL, in their order, values decoded.
pub(super) type Taken = Vec<(&'static str, String)>;

/// The value of `key` in `taken`: the last one, as libpq and tokio-postgres keep the last of
/// a repeated parameter.
pub(super) fn taken<'a>(taken: &'a Taken, key: &str) -> Option<&'a str> {
    taken
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

/// The connection settings `url` names, with the password found as libpq finds it when the
/// URL has none, and the TLS settings of its `sslmode` and `sslrootcert` (tokio-postgres's
/// own `ssl_mode` set to match).
///
/// # Errors
///
/// [`Error::InvalidConfig`] (`database URL`) for a URL that does not parse, or an `sslmode`
/// libpq does not know; the parser's errors name the option, never its value.
pub(super) fn connection_config(
    url: &str,
    env: Env<'_>,
) -> Result<(tokio_postgres::Config, super::tls::UrlTls)> {
    let (url, params) = take_params(url, &OWN_PARAMS)?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::config("database URL", format!("does not parse: {e}")))?;
    let tls = super::tls::UrlTls::new(taken(&params, "sslmode"), taken(&params, "sslrootcert"))?;
    config.ssl_mode(tls.wire_mode());
    resolve(
        &mut config,
        taken(&params, "passfile").map(PathBuf::from),
        env,
    );
    Ok((config, tls))
}

/// `url` without the parameters named in `keys`, and their values. In the URL form
/// (`postgres://...?passfile=/path`) a value is percent-decoded; in the `key=value` form it
/// may be quoted, with `\` escapes.
pub(super) fn take_params(url: &str, keys: &[&'static str]) -> Result<(String, Taken)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"));
    match rest {
        Some(rest) => take_from_url(url, url.len() - rest.len(), keys),
        None => Ok(take_from_key_values(url, keys)),
    }
}

fn take_from_url(url: &str, authority_at: usize, keys: &[&'static str]) -> Result<(String, Taken)> {
    // As tokio-postgres reads it: the credentials end at the first `@`, the query starts at
    // the first `?` after them (a password may hold a `?`).
    let after_credentials = url[authority_at..]
        .find('@')
        .map_or(authority_at, |at| authority_at + at + 1);
    let Some(query_at) = url[after_credentials..]
        .find('?')
        .map(|at| after_credentials + at)
    else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in url[query_at + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let ours = percent_decoded(key).and_then(|key| keys.iter().find(|k| **k == key).copied());
        if let Some(key) = ours {
            let value = percent_decoded(value).ok_or_else(|| {
                Error::config(
                    "database URL",
                    format!("does not parse: {key} is not percent-encoded UTF-8"),
                )
            })?;
            taken.push((key, value));
        } else {
            kept.push(pair);
        }
    }
    let mut rebuilt = url[..query_at].to_owned();
    if !kept.is_empty() {
        rebuilt.push('?');
        rebuilt.push_str(&kept.join("&"));
    }
    Ok((rebuilt, taken))
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The `key=value` form, read as tokio-postgres reads it. A text it cannot read is returned
/// whole, for tokio-postgres to report.
fn take_from_key_values(text: &str, keys: &[&'static str]) -> (String, Taken) {
    let mut chars = text.char_indices().peekable();
    let mut kept: Vec<&str> = Vec::new();
    let mut taken = Vec::new();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key_end = start;
        while let Some((i, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key_end = i + c.len_utf8();
        }
        let key = &text[start..key_end];
        skip_ws(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return (text.to_owned(), Vec::new());
        }
        skip_ws(&mut chars);
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut end = text.len();
        let mut closed = !quoted;
        while let Some(&(i, c)) = chars.peek() {
            if (quoted && c == '\'') || (!quoted && c.is_whitespace()) {
                if quoted {
                    chars.next();
                    closed = true;
                    end = i + 1;
                } else {
                    end = i;
                }
                break;
            }
            chars.next();
            if c == '\\' {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            } else {
                value.push(c);
            }
        }
        if !closed {
            return (text.to_owned(), Vec::new());
        }
        if let Some(key) = keys.iter().find(|k| **k == key) {
            taken.push((*key, value));
        } else {
            kept.push(&text[start..end]);
        }
    }
    (kept.join(" "), taken)
}

/// Sets `config`'s password from `PGPASSWORD` or a password file when it has none.
pub(super) fn resolve(
    config: &mut tokio_postgres::Config,
    passfile: Option<PathBuf>,
    env: Env<'_>,
) {
    if config.get_password().is_some_and(|p| !p.is_empty()) {
        return;
    }
    if let Some(password) = env("PGPASSWORD").filter(|p| !p.is_empty()) {
        config.password(password.as_encoded_bytes());
        return;
    }
    let nonempty = |v: OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    let Some(path) = passfile
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| env("PGPASSFILE").and_then(nonempty))
        .or_else(|| {
            env("HOME")
                .and_then(nonempty)
                .map(|home| home.join(".pgpass"))
        })
    else {
        return;
    };
    let Some(mut contents) = read_passfile(&path) else {
        return;
    };
    let user = config
        .get_user()
        .map(str::to_owned)
        .or_else(|| env("USER").and_then(|u| u.into_string().ok()));
    if let Some(user) = user {
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        for (host, port) in targets(config) {
            if let Some(mut password) = lookup(&contents, [&host, &port, &dbname, &user]) {
                config.password(password.as_bytes());
                password.zeroize();
                break;
            }
        }
    }
    contents.zeroize();
}

/// Each host the config names, with its port, as a password file names them: a Unix socket
/// (or no host at all) is `localhost`, as libpq has it; the port is `5432` unless set.
fn targets(config: &tokio_postgres::Config) -> Vec<(String, String)> {
    let ports = config.get_ports();
    let port = |i: usize| {
        ports
            .get(i)
            .or(ports.first())
            .map_or_else(|| "5432".to_owned(), u16::to_string)
    };
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) if !name.is_empty() => name.clone(),
            _ => "localhost".to_owned(),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    if hosts.is_empty() {
        hosts.push("localhost".to_owned());
    }
    hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| (host, port(i)))
        .collect()
}

/// The password file's text, unless it is not a plain file, is open to its group or to
/// others (as libpq, which warns and ignores it), or cannot be read.
fn read_passfile(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return None;
        }
    }
    std::fs::read_to_string(path).ok()
}

/// The password of the first line of a password file that matches `[host, port, database,
/// user]`; `None` when none does, or the first that does has an empty password.
pub(super) fn lookup(contents: &str, want: [&str; 4]) -> Option<String> {
    for line in contents.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = fields(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = fields
            .iter()
            .zip(want)
            .all(|(field, want)| *field == "*" || unescaped(field) == want);
        if matches {
            let password = unescaped(fields[4]);
            return (!password.is_empty()).then_some(password);
        }
    }
    None
}

/// A line split at each `:` that no `\` escapes; the fields keep their escapes.
fn fields(line: &str) -> Vec<&str> {
    let mut fields = Vec::with_capacity(5);
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ':' => {
                fields.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(&line[start..]);
    fields
}

/// A field with its escapes removed: `\x` is `x`; a `\` at the very end stays.
fn unescaped(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().unwrap_or('\\'));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn password_of(config: &tokio_postgres::Config) -> Option<String> {
        config
            .get_password()
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
    }

    /// A password file in a fresh directory, with `mode`.
    fn passfile(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        (dir, path)
    }

    #[test]
    fn lookup_matches_fields_wildcards_and_escapes() {
        let file = "\
# a comment:*:*:*:not-this
db.example:5432:calls:dialer:first
*:5433:*:dialer:any-host-on-5433
host\\:with\\:colons:*:*:*:escaped-host
*:*:*:rest\\\\user:back\\\\slash
*:*:weird:*:pa\\:ss:word-after-a-colon-is-ignored
*:*:empty:*:
too:few:fields:only
star:*:*:*:lit\\*eral
\\*:*:*:*:escaped-star-is-no-wildcard
*:*:*:*:fallback\r
";
        let cases = [
            (["db.example", "5432", "calls", "dialer"], Some("first")),
            (
                ["other", "5433", "calls", "dialer"],
                Some("any-host-on-5433"),
            ),
            (["host:with:colons", "1", "d", "u"], Some("escaped-host")),
            (["h", "1", "d", "rest\\user"], Some("back\\slash")),
            (["h", "1", "weird", "u"], Some("pa:ss")),
            (["h", "1", "empty", "u"], None),
            (["star", "1", "d", "u"], Some("lit*eral")),
            (["*", "1", "d", "u"], Some("escaped-star-is-no-wildcard")),
            (["db.example", "5432", "calls", "other"], Some("fallback")),
            (["# a comment", "*", "*", "*"], Some("fallback")),
        ];
        for (want, expected) in cases {
            assert_eq!(lookup(file, want).as_deref(), expected, "{want:?}");
        }
        assert_eq!(lookup("", ["h", "1", "d", "u"]), None);
        assert_eq!(lookup("h:1:d:u:\n", ["h", "1", "d", "u"]), None);
        assert_eq!(
            lookup("h:1:d:u:pw\\", ["h", "1", "d", "u"]).as_deref(),
            Some("pw\\")
        );
        assert_eq!(lookup("h:1:d:u:pw", ["h", "1", "d", "U"]), None);
    }

    #[test]
    fn passfile_leaves_the_url_in_either_form() {
        let cases = [
            ("postgres://u@h/db", "postgres://u@h/db", None),
            (
                "postgres://u@h/db?passfile=%2Ftmp%2Fp%20f&connect_timeout=5",
                "postgres://u@h/db?connect_timeout=5",
                Some("/tmp/p f"),
            ),
            (
                "postgresql://u:pa?ss@h/db?application_name=x&passfile=/p",
                "postgresql://u:pa?ss@h/db?application_name=x",
                Some("/p"),
            ),
            (
                "postgres://u@h/db?passfile=/p",
                "postgres://u@h/db",
                Some("/p"),
            ),
            (
                "host=h user=u passfile='/a b/\\'q' dbname=db",
                "host=h user=u dbname=db",
                Some("/a b/'q"),
            ),
            ("passfile = /p host=h", "host=h", Some("/p")),
            ("host=h user=u", "host=h user=u", None),
        ];
        for (url, rest, path) in cases {
            let (left, params) = take_params(url, &OWN_PARAMS).unwrap();
            assert_eq!(left, rest, "{url}");
            assert_eq!(taken(&params, "passfile"), path, "{url}");
            assert!(left.parse::<tokio_postgres::Config>().is_ok(), "{left}");
        }
        assert!(take_params("postgres://u@h/db?passfile=%ff", &OWN_PARAMS).is_err());
        // The TLS parameters tokio-postgres cannot read leave the same way, in both forms.
        let (left, params) = take_params(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=x",
            &OWN_PARAMS,
        )
        .unwrap();
        assert_eq!(left, "postgres://u@h/db?application_name=x");
        assert_eq!(taken(&params, "sslmode"), Some("verify-full"));
        assert_eq!(taken(&params, "sslrootcert"), Some("/ca.pem"));
        let (left, params) = take_params(
            "host=h sslmode=require sslrootcert='/a b.pem' sslmode=verify-ca",
            &OWN_PARAMS,
        )
        .unwrap();
        assert_eq!(left, "host=h");
        assert_eq!(taken(&params, "sslmode"), Some("verify-ca"));
        assert_eq!(taken(&params, "sslrootcert"), Some("/a b.pem"));
    }

    #[test]
    fn the_password_comes_from_the_url_then_pgpassword_then_the_file() {
        let (_dir, file) = passfile("127.0.0.1:5432:calls:dialer:from-file\n", 0o600);
        let file = file.to_str().unwrap().to_owned();
        let url = "postgres://dialer@127.0.0.1:5432/calls";
        let with_param = format!("{url}?passfile={file}");
        let none = env_of(&[]);
        let pgpassword = env_of(&[("PGPASSWORD", "from-env"), ("PGPASSFILE", &file)]);
        let pgpassfile = env_of(&[("PGPASSFILE", &file)]);
        let empty_pgpassword = env_of(&[("PGPASSWORD", ""), ("PGPASSFILE", &file)]);
        let cases: [(&str, Env<'_>, Option<&str>); 8] = [
            (url, &none, None),
            (
                "postgres://dialer:in-url@127.0.0.1:5432/calls",
                &pgpassword,
                Some("in-url"),
            ),
            (url, &pgpassword, Some("from-env")),
            (url, &pgpassfile, Some("from-file")),
            (&with_param, &none, Some("from-file")),
            (url, &empty_pgpassword, Some("from-file")),
            // Another database: no line matches.
            ("postgres://dialer@127.0.0.1:5432/other", &pgpassfile, None),
            (
                "host=127.0.0.1 user=dialer dbname=calls",
                &pgpassfile,
                Some("from-file"),
            ),
        ];
        for (url, env, expected) in cases {
            let (config, _) = connection_config(url, env).unwrap();
            assert_eq!(password_of(&config).as_deref(), expected, "{url}");
        }
        // `~/.pgpass` when nothing else names a file.
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join(".pgpass");
        std::fs::copy(&file, &home).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let home_env = env_of(&[("HOME", dir.path().to_str().unwrap())]);
        let (config, _) = connection_config(url, &home_env).unwrap();
        assert_eq!(password_of(&config).as_deref(), Some("from-file"));
    }

    #[test]
    fn the_file_matches_host_port_database_and_user_defaults() {
        let (_dir, file) = passfile(
            "localhost:5432:dialer:dialer:socket-default-db\n\
             db1:6000:calls:dialer:one\n\
             db2:6001:calls:dialer:two\n",
            0o400,
        );
        let env = env_of(&[("PGPASSFILE", file.to_str().unwrap()), ("USER", "dialer")]);
        for (url, expected) in [
            // A Unix socket is `localhost`; no database is the user's name.
            (
                "host=/run/postgresql user=dialer",
                Some("socket-default-db"),
            ),
            // No user: `$USER`.
            ("host=/run/postgresql", Some("socket-default-db")),
            ("postgres://dialer@db1:6000/calls", Some("one")),
            // The second host matches when the first does not.
            ("postgres://dialer@db3:6000,db2:6001/calls", Some("two")),
            ("postgres://dialer@db1:6001/calls", None),
        ] {
            let (config, _) = connection_config(url, &env).unwrap();
            assert_eq!(password_of(&config).as_deref(), expected, "{url}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_file_open_to_others_or_not_plain_is_ignored() {
        let url = "postgres://dialer@127.0.0.1:5432/calls";
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let (_dir, file) = passfile("*:*:*:*:leaked\n", mode);
            let env = env_of(&[("PGPASSFILE", file.to_str().unwrap())]);
            let (config, _) = connection_config(url, &env).unwrap();
            assert_eq!(password_of(&config), None, "mode {mode:o}");
        }
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[("PGPASSFILE", dir.path().to_str().unwrap())]);
        assert_eq!(password_of(&connection_config(url, &env).unwrap().0), None);
        let env = env_of(&[("PGPASSFILE", "/nonexistent/pgpass")]);
        assert_eq!(password_of(&connection_config(url, &env).unwrap().0), None);
    }

    #[test]
    fn no_password_reaches_an_error() {
        let env = env_of(&[("PGPASSWORD", "s3cret-env")]);
        for url in [
            "postgres://dialer:s3cret-url@h/db?sslmode=bogus",
            "postgres://dialer@h/db?unknown=s3cret-x",
            "host=h password=s3cret-kv sslmode=nope",
            "postgres://dialer:s3cret-url@h/db?sslmode=verify-fool",
        ] {
            let err = connection_config(url, &env).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("s3cret"), "{text}");
        }
    }
}
