//! Reading real files: formats, parquet nesting and streaming, and every
//! bad input naming file, row and field.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use ft_data::{DataConfig, DataError, DatasetConfig, Message, Sample, load};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

fn ds(json: &str) -> DatasetConfig {
    serde_json::from_str(json).unwrap()
}

fn data(datasets: Vec<DatasetConfig>) -> DataConfig {
    serde_json::from_value(serde_json::json!({"datasets": [], "shuffle": false}))
        .map(|mut d: DataConfig| {
            d.datasets = datasets;
            d
        })
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load_err(dir: &Path, d: DatasetConfig) -> String {
    load(&data(vec![d]), dir, 0).unwrap_err().to_string()
}

fn chat_struct_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ])
}

/// Writes a parquet file with a `messages: list<struct<role, content>>`
/// column and an `id` column, `rows_per_group` rows per row group.
fn write_chat_parquet(path: &Path, convs: &[Vec<(&str, &str)>], rows_per_group: usize) {
    let item = Field::new("item", DataType::Struct(chat_struct_fields()), true);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("messages", DataType::List(Arc::new(item)), true),
    ]));
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    let mut lb = ListBuilder::new(StructBuilder::from_fields(chat_struct_fields(), 0));
    for conv in convs {
        for (role, content) in conv {
            let sb = lb.values();
            sb.field_builder::<StringBuilder>(0)
                .unwrap()
                .append_value(role);
            sb.field_builder::<StringBuilder>(1)
                .unwrap()
                .append_value(content);
            sb.append(true);
        }
        lb.append(true);
    }
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..convs.len() as i64));
    let msgs: ArrayRef = Arc::new(lb.finish());
    let batch = RecordBatch::try_new(schema, vec![ids, msgs]).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_nested_messages_across_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("chat.parquet");
    let convs: Vec<Vec<(&str, &str)>> = (0..7)
        .map(|i| {
            vec![
                ("user", "q"),
                ("assistant", if i % 2 == 0 { "even" } else { "odd" }),
            ]
        })
        .collect();
    write_chat_parquet(&p, &convs, 3);
    let meta = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(
            std::fs::File::open(&p).unwrap(),
        )
        .unwrap(),
    )
    .num_row_groups();
    assert_eq!(meta, 3, "the test needs several row groups");
    let s = load(
        &data(vec![ds(
            r#"{"type":"chat_template","path":"chat.parquet"}"#,
        )]),
        dir.path(),
        0,
    )
    .unwrap();
    assert_eq!(s.train.len(), 7);
    assert_eq!(s.train[4].at.row, 4);
    assert_eq!(
        s.train[5].sample,
        Sample::Chat(vec![
            Message::new("user", "q"),
            Message::new("assistant", "odd")
        ])
    );
}

#[test]
fn sharegpt_aliases_alpaca_completion_input_output() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "sg.jsonl",
        "{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"yo\"}]}\n",
    );
    let sg = ds(
        r#"{"type":"chat_template","path":"sg.jsonl","field_messages":"conversations","message_field_role":"from","message_field_content":"value","roles":{"user":["human"],"assistant":["gpt"]}}"#,
    );
    let s = load(&data(vec![sg]), dir.path(), 0).unwrap();
    assert_eq!(
        s.train[0].sample,
        Sample::Chat(vec![
            Message::new("user", "hi"),
            Message::new("assistant", "yo")
        ])
    );

    write(
        dir.path(),
        "al.jsonl",
        "{\"instruction\": \"Add\", \"input\": \"2 2\", \"output\": \"4\"}\n{\"instruction\": \"Hi\", \"output\": \"Hello\"}\n",
    );
    let s = load(
        &data(vec![ds(r#"{"type":"alpaca","path":"al.jsonl"}"#)]),
        dir.path(),
        0,
    )
    .unwrap();
    assert_eq!(
        s.train[0].sample,
        Sample::Chat(vec![
            Message::new("user", "Add\n\n2 2"),
            Message::new("assistant", "4")
        ])
    );
    assert_eq!(
        s.train[1].sample,
        Sample::Chat(vec![
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello")
        ])
    );

    write(dir.path(), "c.jsonl", "{\"text\": \"raw\"}\n");
    let s = load(
        &data(vec![ds(r#"{"type":"completion","path":"c.jsonl"}"#)]),
        dir.path(),
        0,
    )
    .unwrap();
    assert!(
        matches!(&s.train[0].sample, Sample::Segments { segments, add_eos: true } if segments[0].text == "raw" && segments[0].label)
    );

    write(
        dir.path(),
        "io.jsonl",
        "{\"segments\": [{\"text\": \"Q: \", \"label\": false}, {\"text\": \"A\", \"label\": true}]}\n",
    );
    let s = load(
        &data(vec![ds(r#"{"type":"input_output","path":"io.jsonl"}"#)]),
        dir.path(),
        0,
    )
    .unwrap();
    let Sample::Segments { segments, .. } = &s.train[0].sample else {
        panic!()
    };
    assert_eq!(
        segments.iter().map(|s| s.label).collect::<Vec<_>>(),
        [false, true]
    );
}

#[test]
fn shuffle_is_deterministic_and_val_split_holds_out_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..50)
        .map(|i| format!("{{\"text\": \"row {i}\"}}\n"))
        .collect();
    write(dir.path(), "c.jsonl", &lines);
    let mut cfg = data(vec![ds(r#"{"type":"completion","path":"c.jsonl"}"#)]);
    cfg.shuffle = true;
    cfg.val_set_size = ft_data::ValSetSize(0.2);
    let a = load(&cfg, dir.path(), 7).unwrap();
    let b = load(&cfg, dir.path(), 7).unwrap();
    let c = load(&cfg, dir.path(), 8).unwrap();
    let rows = |s: &ft_data::Splits| s.train.iter().map(|r| r.at.row).collect::<Vec<_>>();
    assert_eq!((a.train.len(), a.eval.len()), (40, 10));
    assert_eq!(rows(&a), rows(&b));
    assert_ne!(rows(&a), rows(&c));
    assert_ne!(rows(&a), (1..=40).collect::<Vec<_>>(), "shuffled");
}

#[test]
fn missing_column_jsonl_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n{\"msgs\": []}\n",
    );
    let e = load_err(
        dir.path(),
        ds(r#"{"type":"chat_template","path":"a.jsonl"}"#),
    );
    assert!(
        e.contains("a.jsonl` line 2")
            && e.contains("missing field `messages`")
            && e.contains("`msgs`"),
        "{e}"
    );

    write_chat_parquet(&dir.path().join("p.parquet"), &[vec![("user", "x")]], 10);
    let e = load_err(
        dir.path(),
        ds(r#"{"type":"chat_template","path":"p.parquet","field_messages":"conversations"}"#),
    );
    assert!(
        e.contains("p.parquet` row 0")
            && e.contains("missing field `conversations`")
            && e.contains("columns `id`, `messages`"),
        "{e}"
    );
}

#[test]
fn wrong_column_type_in_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "messages",
        DataType::Utf8,
        false,
    )]));
    let p = dir.path().join("s.parquet");
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema.clone(), None).unwrap();
    let col: ArrayRef = Arc::new(StringArray::from(vec!["hello", "there"]));
    w.write(&RecordBatch::try_new(schema, vec![col]).unwrap())
        .unwrap();
    w.close().unwrap();
    let e = load_err(
        dir.path(),
        ds(r#"{"type":"chat_template","path":"s.parquet"}"#),
    );
    assert!(
        e.contains("s.parquet` row 0")
            && e.contains("field `messages` should be a list of messages, found a string"),
        "{e}"
    );
}

#[test]
fn empty_conversation_unknown_role_non_string_content() {
    let dir = tempfile::tempdir().unwrap();
    let d = || ds(r#"{"type":"chat_template","path":"a.jsonl"}"#);
    write(dir.path(), "a.jsonl", "{\"messages\": []}\n");
    let e = load_err(dir.path(), d());
    assert!(
        e.contains("line 1") && e.contains("`messages` is an empty conversation"),
        "{e}"
    );

    write(
        dir.path(),
        "a.jsonl",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"robot\", \"content\": \"y\"}]}\n",
    );
    let e = load_err(dir.path(), d());
    assert!(
        e.contains("line 1")
            && e.contains("`messages[1].role` has unknown role `robot`")
            && e.contains("roles: {assistant: [robot]}"),
        "{e}"
    );

    write(
        dir.path(),
        "a.jsonl",
        "\n{\"messages\": [{\"role\": \"user\", \"content\": 5}]}\n",
    );
    let e = load_err(dir.path(), d());
    assert!(
        e.contains("line 2")
            && e.contains("field `messages[0].content` should be a string, found a number (5)"),
        "{e}"
    );
}

#[test]
fn corrupt_parquet_and_truncated_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.parquet", "PAR1 this is not really parquet");
    let e = load_err(
        dir.path(),
        ds(r#"{"type":"chat_template","path":"bad.parquet"}"#),
    );
    assert!(
        e.contains("bad.parquet") && e.contains("cannot read as parquet"),
        "{e}"
    );

    // A real file cut in half.
    let p = dir.path().join("half.parquet");
    write_chat_parquet(&p, &vec![vec![("user", "x")]; 20], 5);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(
        dir.path(),
        ds(r#"{"type":"chat_template","path":"half.parquet"}"#),
    );
    assert!(
        e.contains("half.parquet") && e.contains("cannot read as parquet"),
        "{e}"
    );

    write(
        dir.path(),
        "t.jsonl",
        "{\"text\": \"ok\"}\n{\"text\": \"cut of",
    );
    let e = load_err(dir.path(), ds(r#"{"type":"completion","path":"t.jsonl"}"#));
    assert!(
        e.contains("t.jsonl` line 2") && e.contains("not a JSON object") && e.contains("EOF"),
        "{e}"
    );
}

#[test]
fn directories_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ds");
    std::fs::create_dir(&d).unwrap();
    write(&d, "train-0.jsonl", "{\"text\": \"a\"}\n");
    write(&d, "train-1.jsonl", "{\"text\": \"b\"}\n");
    write(&d, "test-0.jsonl", "{\"text\": \"c\"}\n");
    let s = load(
        &data(vec![ds(
            r#"{"type":"completion","path":"ds","split":"train"}"#,
        )]),
        dir.path(),
        0,
    )
    .unwrap();
    assert_eq!(s.train.len(), 2);
    let e = load_err(
        dir.path(),
        ds(r#"{"type":"completion","path":"ds","split":"validation"}"#),
    );
    assert!(
        e.contains("no .parquet or .jsonl file whose name starts with `validation`"),
        "{e}"
    );
    let _: DataError = ft_data::source::data_files(&d.join("nope.csv"), None).unwrap_err();
}
