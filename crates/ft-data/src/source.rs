//! Reading rows from local files: JSON lines and parquet.
//!
//! Both readers stream: JSON lines are read one line at a time, parquet one
//! record batch (at most [`PARQUET_BATCH_ROWS`] rows of one row group) at a
//! time, with only the columns the dataset's format needs. Every row is handed
//! to the caller as a JSON object so the formats in [`crate::format`] work on
//! one representation and report problems the same way for both files.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use crate::error::{DataError, RowKind, RowRef};

/// Rows per parquet record batch.
pub const PARQUET_BATCH_ROWS: usize = 1024;

/// The file kinds ft reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `.jsonl` / `.json` (one object per line).
    Jsonl,
    /// `.parquet`.
    Parquet,
}

impl FileKind {
    /// The kind of `path` from its extension.
    pub fn of(path: &Path) -> Option<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jsonl" | "json") => Some(Self::Jsonl),
            Some("parquet") => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// The data files of a dataset `path`: the file itself, or the sorted
/// `.parquet`/`.jsonl` files of a directory whose names start with `split`.
pub fn data_files(path: &Path, split: Option<&str>) -> Result<Vec<PathBuf>, DataError> {
    if path.is_file() {
        if FileKind::of(path).is_none() {
            return Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|e| DataError::io(path, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(path, e))?;
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if p.is_file()
            && FileKind::of(&p).is_some()
            && !name.starts_with('.')
            && split.is_none_or(|s| name.starts_with(s))
        {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::NoFiles {
            path: path.to_path_buf(),
            split: split.map(str::to_string),
        });
    }
    Ok(files)
}

/// Calls `f` with every row of `file` as a JSON object. For parquet only
/// `columns` are read; a missing column is reported before any row.
pub fn for_each_row(
    file: &Path,
    columns: &[&str],
    mut f: impl FnMut(RowRef, Map<String, Value>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    match FileKind::of(file) {
        Some(FileKind::Jsonl) => read_jsonl(file, &mut f),
        Some(FileKind::Parquet) => read_parquet(file, columns, &mut f),
        None => Err(DataError::UnknownFormat {
            path: file.to_path_buf(),
        }),
    }
}

fn read_jsonl(
    file: &Path,
    f: &mut dyn FnMut(RowRef, Map<String, Value>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let reader = BufReader::new(File::open(file).map_err(|e| DataError::io(file, e))?);
    for (i, line) in reader.lines().enumerate() {
        let at = RowRef {
            file: file.to_path_buf(),
            row: i + 1,
            kind: RowKind::Line,
        };
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => DataError::BadJsonLine {
                at: at.clone(),
                message: "not UTF-8".into(),
            },
            _ => DataError::io(file, e),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(map)) => f(at, map)?,
            Ok(other) => {
                return Err(DataError::BadJsonLine {
                    at,
                    message: format!("found {}", crate::format::kind(&other)),
                });
            }
            Err(e) => {
                return Err(DataError::BadJsonLine {
                    at,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn parquet_err(file: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        path: file.to_path_buf(),
        message: e.to_string(),
    }
}

fn read_parquet(
    file: &Path,
    columns: &[&str],
    f: &mut dyn FnMut(RowRef, Map<String, Value>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let handle = File::open(file).map_err(|e| DataError::io(file, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| parquet_err(file, e))?;
    let arrow_schema = builder.schema().clone();
    let mut roots = Vec::new();
    let mut names = Vec::new();
    for c in columns {
        match arrow_schema.index_of(c) {
            Ok(i) => {
                check_type(file, c, arrow_schema.field(i).data_type())?;
                roots.push(i);
                names.push((*c).to_string());
            }
            Err(_) => {
                let available: Vec<String> = arrow_schema
                    .fields()
                    .iter()
                    .map(|f| format!("`{}`", f.name()))
                    .collect();
                return Err(DataError::MissingField {
                    at: RowRef {
                        file: file.to_path_buf(),
                        row: 0,
                        kind: RowKind::Row,
                    },
                    field: (*c).to_string(),
                    available: format!("columns {}", available.join(", ")),
                });
            }
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(PARQUET_BATCH_ROWS)
        .build()
        .map_err(|e| parquet_err(file, e))?;
    let mut row = 0usize;
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| parquet_err(file, e))?;
        let cols: Vec<(String, &dyn Array)> = names
            .iter()
            .filter_map(|n| batch.column_by_name(n).map(|a| (n.clone(), a.as_ref())))
            .collect();
        for i in 0..batch.num_rows() {
            let at = RowRef {
                file: file.to_path_buf(),
                row,
                kind: RowKind::Row,
            };
            let mut map = Map::new();
            for (name, arr) in &cols {
                let v = arrow_value(*arr, i).map_err(|found| DataError::UnsupportedColumn {
                    path: file.to_path_buf(),
                    column: name.clone(),
                    found,
                })?;
                if !v.is_null() {
                    map.insert(name.clone(), v);
                }
            }
            f(at, map)?;
            row += 1;
        }
    }
    Ok(())
}

fn supported(dt: &DataType) -> bool {
    match dt {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => true,
        DataType::List(f) | DataType::LargeList(f) => supported(f.data_type()),
        DataType::Struct(fields) => fields.iter().all(|f| supported(f.data_type())),
        _ => false,
    }
}

fn check_type(file: &Path, column: &str, dt: &DataType) -> Result<(), DataError> {
    if supported(dt) {
        Ok(())
    } else {
        Err(DataError::UnsupportedColumn {
            path: file.to_path_buf(),
            column: column.to_string(),
            found: dt.to_string(),
        })
    }
}

/// Converts one Arrow value to JSON; `Err` carries the unsupported type.
fn arrow_value(a: &dyn Array, i: usize) -> Result<Value, String> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => f64::from(a.as_primitive::<Float32Type>().value(i)).into(),
        DataType::Float64 => a.as_primitive::<Float64Type>().value(i).into(),
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::List(_) => list_value(a.as_list::<i32>().value(i).as_ref())?,
        DataType::LargeList(_) => list_value(a.as_list::<i64>().value(i).as_ref())?,
        DataType::Struct(_) => {
            let s = a.as_struct();
            let mut map = Map::new();
            for (field, col) in s.fields().iter().zip(s.columns()) {
                let v = arrow_value(col.as_ref(), i)?;
                if !v.is_null() {
                    map.insert(field.name().clone(), v);
                }
            }
            Value::Object(map)
        }
        other => return Err(other.to_string()),
    })
}

fn list_value(items: &dyn Array) -> Result<Value, String> {
    (0..items.len())
        .map(|j| arrow_value(items, j))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}
