use super::*;

fn op(yaml: &str) -> Op {
    let c: OperatorConfig = serde_yaml_ng::from_str(yaml).unwrap();
    Op::build(&c, 0).unwrap()
}

fn line(s: &str) -> Entry {
    Entry {
        record: LogRecord {
            body: Some(sv(s)),
            ..Default::default()
        },
        resource: Vec::new(),
    }
}

fn attr<'a>(e: &'a Entry, k: &str) -> Option<&'a AnyValue> {
    e.get(&Field::parse(&format!("attributes[\"{k}\"]")).unwrap())
}

#[test]
fn fields_parse_like_stanza() {
    assert_eq!(Field::parse("body").unwrap(), Field::Body(vec![]));
    assert_eq!(
        Field::parse("attributes.a.b").unwrap(),
        Field::Attributes(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        Field::parse("attributes[\"celery.task.id\"]").unwrap(),
        Field::Attributes(vec!["celery.task.id".into()])
    );
    assert_eq!(
        Field::parse("resource['host.name']").unwrap(),
        Field::Resource(vec!["host.name".into()])
    );
    assert_eq!(
        Field::parse("attributes").unwrap(),
        Field::Attributes(vec![])
    );
    assert!(Field::parse("foo.bar").is_err());
    assert!(Field::parse("attributes..x").is_err());
}

#[test]
fn structlog_json_line_with_timestamp_and_severity() {
    let p = op(r#"
type: json_parser
timestamp: { parse_from: attributes.timestamp, layout_type: strptime, layout: '%Y-%m-%dT%H:%M:%S.%fZ' }
severity: { parse_from: attributes.level }
"#);
    let mut e = line(
        r#"{"task_id": "abc", "event": "task.started", "level": "warning", "timestamp": "2026-12-06T01:02:03.250000Z", "n": 3}"#,
    );
    p.apply(&mut e).unwrap();
    assert_eq!(as_text(attr(&e, "task_id").unwrap()).unwrap(), "abc");
    assert_eq!(
        attr(&e, "n").unwrap().value,
        Some(any_value::Value::IntValue(3))
    );
    assert_eq!(e.record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(e.record.severity_text, "warning");
    assert_eq!(e.record.time_unix_nano, 1_796_518_923_250_000_000);
    assert!(matches!(
        e.record.body.as_ref().unwrap().value,
        Some(any_value::Value::StringValue(_))
    ));
}

#[test]
fn not_json_is_sent_on_unchanged() {
    let p = op("type: json_parser");
    let mut e = line("plain text line");
    let before = e.clone();
    let err = p.apply(&mut e).unwrap_err();
    assert!(
        matches!(
            err,
            OpError::Sent {
                op: "json_parser",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(e, before);
    let p = op("type: json_parser\non_error: drop_quiet");
    assert!(matches!(
        p.apply(&mut e).unwrap_err(),
        OpError::Dropped { quiet: true, .. }
    ));
}

#[test]
fn regex_then_move_remove_add() {
    let ops = [
        op(
            r#"{type: regex_parser, regex: '^(?P<time>\S+) (?P<sev>[A-Z]+) (?P<msg>.*)$', severity: {parse_from: attributes.sev}, timestamp: {parse_from: attributes.time, layout_type: gotime, layout: '2006-01-02T15:04:05Z07:00'}}"#,
        ),
        op("{type: move, from: attributes.msg, to: body}"),
        op("{type: remove, field: attributes.sev}"),
        op(r#"{type: add, field: "resource['service.name']", value: shop}"#),
        op("{type: add, field: attributes.nested.k, value: 1}"),
    ];
    let mut e = line("2026-12-06T01:02:03+01:00 ERROR boom happened");
    for o in &ops {
        o.apply(&mut e).unwrap();
    }
    assert_eq!(
        as_text(e.record.body.as_ref().unwrap()).unwrap(),
        "boom happened"
    );
    assert!(attr(&e, "sev").is_none());
    assert!(attr(&e, "msg").is_none());
    assert_eq!(e.record.severity_number, SeverityNumber::Error as i32);
    assert_eq!(e.record.time_unix_nano, 1_796_515_323_000_000_000);
    assert_eq!(
        as_text(
            e.get(&Field::parse("resource[\"service.name\"]").unwrap())
                .unwrap()
        )
        .unwrap(),
        "shop"
    );
    assert_eq!(
        e.get(&Field::parse("attributes.nested.k").unwrap())
            .unwrap()
            .value,
        Some(any_value::Value::IntValue(1))
    );
}

#[test]
fn json_to_body_and_custom_severity_mapping() {
    let p = op(
        r#"{type: json_parser, parse_to: body, severity: {parse_from: body.lvl, preset: none, mapping: {error: [oops, 50], info: 20}}}"#,
    );
    let mut e = line(r#"{"lvl": 50, "m": "x"}"#);
    p.apply(&mut e).unwrap();
    assert_eq!(e.record.severity_number, SeverityNumber::Error as i32);
    assert_eq!(
        as_text(e.get(&Field::parse("body.m").unwrap()).unwrap()).unwrap(),
        "x"
    );
}

#[test]
fn bad_operator_configs_are_refused() {
    for (yaml, key) in [
        ("type: nope", "operators[0].type"),
        (
            "{type: regex_parser, regex: '(unclosed'}",
            "operators[0].regex",
        ),
        (
            "{type: regex_parser, regex: 'no groups'}",
            "operators[0].regex",
        ),
        ("{type: move, from: body}", "operators[0].to"),
        ("{type: json_parser, output: x}", "operators[0].output"),
        (
            "{type: add, field: body, value: 'EXPR(1)'}",
            "operators[0].value",
        ),
    ] {
        let c: OperatorConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let e = Op::build(&c, 0)
            .err()
            .unwrap_or_else(|| panic!("{yaml} accepted"));
        assert!(e.to_string().contains(key), "{yaml}: {e}");
    }
}
