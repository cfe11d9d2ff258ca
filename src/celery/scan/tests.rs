use super::*;

fn skip_all(text: &str) -> Result<()> {
    let mut s = Scanner::new(text.as_bytes());
    s.skip()?;
    s.end()
}

fn num(text: &str) -> Result<Number> {
    let mut s = Scanner::new(text.as_bytes());
    let n = s.number()?;
    s.end()?;
    Ok(n)
}

fn string(text: &str) -> Result<String> {
    let mut s = Scanner::new(text.as_bytes());
    let v = s.string()?.into_owned();
    s.end()?;
    Ok(v)
}

/// The skipper accepts exactly what serde_json accepts, on valid and invalid texts.
#[test]
fn skip_agrees_with_serde_json() {
    let cases = [
        "0",
        "-0",
        "1.5e3",
        "-1E-2",
        "1e999",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "1e+",
        "+1",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "True",
        r#""""#,
        r#""a\"b""#,
        r#""\u00e9\ud83d\ude00""#,
        r#""\x""#,
        r#""\u12""#,
        "\"a\u{1}\"",
        "\"unterminated",
        "\"\\",
        "[]",
        "{}",
        "[1,]",
        "[,1]",
        "{,}",
        r#"{"a":}"#,
        r#"{"a"}"#,
        r#"{"a":1,}"#,
        r#"{"a":1 "b":2}"#,
        r#"{1:2}"#,
        "[1 2]",
        "[}",
        "{]",
        "[[[]]]",
        r#"{"a":[{"b":[1,{"c":null}]}],"d":"e"}"#,
        " [ 1 , { \"a\" : [ ] } ] ",
        "[1]]",
        "{}}",
        "",
        " ",
        "[",
        "{",
        r#"{"a":1"#,
        r#"{"a""#,
        "[\"\u{7f}\u{e9}\"]",
    ];
    for text in cases {
        let ours = skip_all(text).is_ok();
        let theirs = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
        assert_eq!(ours, theirs, "{text:?}");
    }
}

#[test]
fn skip_any_depth_without_recursion() {
    let n = 200_000;
    assert!(skip_all(&format!("{}{}", "[".repeat(n), "]".repeat(n))).is_ok());
    let deep_obj = format!("{}1{}", r#"{"a":["#.repeat(n), "]}".repeat(n));
    assert!(skip_all(&deep_obj).is_ok());
    // Mismatched closers far down are still caught.
    let bad = format!("{}{}}}{}", "[".repeat(100), "]".repeat(50), "]".repeat(49));
    assert!(skip_all(&bad).is_err());
    assert!(skip_all(&format!("{}{}", "[".repeat(n), "]".repeat(n - 1))).is_err());
}

#[test]
fn numbers_like_serde_json() {
    assert_eq!(num("0"), Ok(Number::U64(0)));
    assert_eq!(num("18446744073709551615"), Ok(Number::U64(u64::MAX)));
    assert_eq!(
        num("18446744073709551616"),
        Ok(Number::F64(18446744073709551616.0))
    );
    assert_eq!(num("-9223372036854775808"), Ok(Number::I64(i64::MIN)));
    assert_eq!(
        num("-9223372036854775809"),
        Ok(Number::F64(-9223372036854775809.0))
    );
    assert_eq!(num("-7"), Ok(Number::I64(-7)));
    let Ok(Number::F64(z)) = num("-0") else {
        panic!("-0 is a float")
    };
    assert!(z == 0.0 && z.is_sign_negative());
    assert_eq!(num("7.0"), Ok(Number::F64(7.0)));
    assert_eq!(num("1795606961.5"), Ok(Number::F64(1795606961.5)));
    assert_eq!(num("2.5E-3"), Ok(Number::F64(0.0025)));
    assert_eq!(num("1e-999"), Ok(Number::F64(0.0)));
    assert!(num("1e999").is_err());
    assert!(num("-1e999").is_err());
    for bad in ["01", "1.", "-", "1e", "+1", ".5", "0x1", "1.5.2"] {
        assert!(num(bad).is_err(), "{bad}");
    }
    // Same values as serde_json on ordinary numbers.
    for text in [
        "0.61",
        "0.97",
        "12345.678",
        "-3.25e2",
        "1e22",
        "123456789012345678",
    ] {
        let theirs: serde_json::Number = serde_json::from_str(text).expect("valid");
        let ours = num(text).expect("valid");
        match ours {
            Number::U64(n) => assert_eq!(theirs.as_u64(), Some(n)),
            Number::I64(n) => assert_eq!(theirs.as_i64(), Some(n)),
            Number::F64(x) => assert_eq!(theirs.as_f64(), Some(x), "{text}"),
        }
    }
}

/// The exact fast path gives the correctly rounded value (the standard library's parse).
#[test]
fn float_fast_path_is_exact() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..50_000 {
        let m = next() % (1 << (i % 58));
        let text = match i % 4 {
            0 => format!("{}.{:0w$}", m / 1000, m % 1000, w = 3),
            1 => format!("{m}e{}", (next() % 45) as i64 - 22),
            2 => format!("-0.{m}"),
            _ => format!("{m}.{}E+{}", next() % 100, next() % 25),
        };
        let want: f64 = text.parse().expect("valid");
        match num(&text) {
            Ok(Number::F64(got)) => assert_eq!(got.to_bits(), want.to_bits(), "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn strings_like_serde_json() {
    for text in [
        r#""plain""#,
        r#""""#,
        r#""a\"b\\c\/d\b\f\n\r\t""#,
        r#""\u00e9t\u00E9""#,
        r#""\ud83d\ude00 smile""#,
        r#""Traceback (most recent call last):\n  File \"x.py\", line 1""#,
        "\"caf\u{e9} \u{1f600}\"",
        r#""\u0000""#,
    ] {
        let theirs: String = serde_json::from_str(text).expect("valid");
        assert_eq!(string(text).as_deref(), Ok(theirs.as_str()), "{text}");
    }
    for bad in [
        r#""\ud83d""#,
        r#""\ud83dx""#,
        r#""\ude00""#,
        r#""\ud83d\u0041""#,
        r#""\q""#,
        "\"tab\there\"",
        "\"open",
    ] {
        assert!(string(bad).is_err(), "{bad}");
        assert!(serde_json::from_str::<String>(bad).is_err(), "{bad}");
    }
    // Invalid UTF-8: refused by `string`, kept by `string_bytes`.
    let raw = b"\"\xff\"";
    assert!(Scanner::new(raw).string().is_err());
    assert_eq!(
        Scanner::new(raw).string_bytes().map(Cow::into_owned),
        Ok(vec![0xff])
    );
    // Long strings cross the word-at-a-time search at every alignment.
    for len in 0..40 {
        for (at, special) in [(len / 2, "\\n"), (len, "")] {
            let mut body = "x".repeat(len);
            body.insert_str(at.min(body.len()), special);
            let text = format!("\"{body}\"");
            let theirs: String = serde_json::from_str(&text).expect("valid");
            assert_eq!(string(&text).as_deref(), Ok(theirs.as_str()));
        }
        let ctrl = format!("\"{}\u{1f}\"", "y".repeat(len));
        assert!(string(&ctrl).is_err());
    }
    // Long runs (past the word-at-a-time prefix): control characters, non-ASCII and
    // escapes at every position are found.
    for len in [17, 24, 40, 63, 64, 65, 72, 100, 300] {
        for at in 0..len {
            let mut body: Vec<char> = "z".repeat(len).chars().collect();
            body[at] = '\u{e9}';
            let text = format!("\"{}\"", body.iter().collect::<String>());
            assert_eq!(
                string(&text).ok().as_deref(),
                Some(&text[1..text.len() - 1])
            );
            body[at] = '\u{7}';
            let text = format!("\"{}\"", body.iter().collect::<String>());
            let e = string(&text).expect_err("control character");
            assert_eq!((e.pos, e.what), (at + 1, "control character in string"));
            body[at] = 'q';
            let text = format!(
                "\"{}\\n{}\"",
                body.iter().collect::<String>(),
                "r".repeat(at)
            );
            let theirs: String = serde_json::from_str(&text).expect("valid");
            assert_eq!(string(&text).as_deref(), Ok(theirs.as_str()));
        }
        let open = format!("\"{}", "w".repeat(len));
        assert!(string(&open).is_err());
    }
}

#[test]
fn objects_and_arrays() {
    let text = br#" { "a" : 1 , "k\u0065y" : [true, null, "s"], "z": {"n": -2} } "#;
    let mut s = Scanner::new(text);
    let mut seen = Vec::new();
    s.object(|s, key| {
        seen.push(String::from_utf8_lossy(key).into_owned());
        match key {
            b"key" => s.array(|s, i| {
                match i {
                    0 => assert!(s.bool()?),
                    1 => assert!(s.null()?),
                    _ => assert_eq!(s.string()?, "s"),
                }
                Ok(())
            }),
            _ => s.skip(),
        }
    })
    .expect("valid");
    s.end().expect("nothing after");
    assert_eq!(seen, ["a", "key", "z"]);

    for bad in [
        &b"{"[..],
        b"{\"a\" 1}",
        b"{\"a\":1,}",
        b"[1,]",
        b"{\"a\":1} x",
    ] {
        let mut s = Scanner::new(bad);
        let r = s.object(|s, _| s.skip()).and_then(|()| s.end());
        let r2 = Scanner::new(bad).array(|s, _| s.skip());
        assert!(
            r.is_err() && r2.is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let e = Scanner::new(b"[1,2 3]")
        .array(|s, _| s.skip())
        .expect_err("bad");
    assert_eq!(e.pos, 5);
    assert_eq!(e.to_string(), "expected `,` or `]` at byte 5");
}
