//! Text forms of a command line: the `cmdline` and `json_cmdline` columns.

/// Arguments as text: invalid UTF-8 becomes U+FFFD (documented in the README). Valid
/// arguments are taken over without a copy.
pub fn args_lossy(argv: Vec<Vec<u8>>) -> Vec<String> {
    argv.into_iter()
        .map(|a| {
            String::from_utf8(a)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
        .collect()
}

fn needs_quotes(arg: &str) -> bool {
    arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '\\'))
}

/// `cmdline`: arguments joined by single spaces. An argument that is empty or contains
/// whitespace, a control character, a quote or a backslash is wrapped in single quotes, with
/// each `'` inside written as `'\''` (POSIX shell quoting), so the text splits back exactly.
pub fn write_cmdline(out: &mut Vec<u8>, args: &[String]) {
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        if needs_quotes(arg) {
            out.push(b'\'');
            for (j, piece) in arg.split('\'').enumerate() {
                if j > 0 {
                    out.extend_from_slice(br"'\''");
                }
                out.extend_from_slice(piece.as_bytes());
            }
            out.push(b'\'');
        } else {
            out.extend_from_slice(arg.as_bytes());
        }
    }
}

/// `json_cmdline`: a compact JSON array of the arguments.
pub fn write_json_cmdline(out: &mut Vec<u8>, args: &[String]) {
    if serde_json::to_writer(&mut *out, args).is_err() {
        out.extend_from_slice(b"[]");
    }
}

/// Bytes of a path or similar field as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn cmdline(args: &[String]) -> String {
        let mut out = Vec::new();
        write_cmdline(&mut out, args);
        String::from_utf8(out).expect("utf-8")
    }

    fn json_cmdline(args: &[String]) -> String {
        let mut out = Vec::new();
        write_json_cmdline(&mut out, args);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn plain_arguments_are_joined() {
        assert_eq!(cmdline(&s(&["ls", "-l", "/tmp"])), "ls -l /tmp");
        assert_eq!(json_cmdline(&s(&["ls", "-l"])), r#"["ls","-l"]"#);
        assert_eq!(cmdline(&[]), "");
        assert_eq!(json_cmdline(&[]), "[]");
    }

    #[test]
    fn hostile_arguments_are_quoted() {
        let args = s(&[
            "echo",
            "a b",
            "",
            "it's",
            "x\"y",
            "back\\slash",
            "new\nline",
        ]);
        assert_eq!(
            cmdline(&args),
            r#"echo 'a b' '' 'it'\''s' 'x"y' 'back\slash' 'new
line'"#
        );
        assert_eq!(
            json_cmdline(&args),
            r#"["echo","a b","","it's","x\"y","back\\slash","new\nline"]"#
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let args = args_lossy(vec![b"a\xffb".to_vec(), b"ok".to_vec()]);
        assert_eq!(args, vec!["a\u{fffd}b".to_string(), "ok".to_string()]);
        assert_eq!(json_cmdline(&args), "[\"a\u{fffd}b\",\"ok\"]");
    }
}
