//! Parquet copies of the tidy tables (`ranks.parquet`, `spectra.parquet`) for dataframe users:
//! the same rows and column names as the CSVs, uncompressed, one row group. Written with the
//! `parquet` crate's column writers (polars would cost a 20-minute build, DESIGN §6).

use super::tables::{RankRow, SpectrumRow};
use anyhow::{Context, Result};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;

/// One column of a table, in schema order.
enum Column {
    Text(&'static str, Vec<String>),
    Int(&'static str, Vec<i64>),
    Float(&'static str, Vec<f64>),
    Bool(&'static str, Vec<bool>),
}

impl Column {
    fn schema_field(&self) -> String {
        match self {
            Column::Text(name, _) => format!("REQUIRED BYTE_ARRAY {name} (UTF8);"),
            Column::Int(name, _) => format!("REQUIRED INT64 {name};"),
            Column::Float(name, _) => format!("REQUIRED DOUBLE {name};"),
            Column::Bool(name, _) => format!("REQUIRED BOOLEAN {name};"),
        }
    }
}

fn text<T>(name: &'static str, rows: &[T], get: impl Fn(&T) -> &str) -> Column {
    Column::Text(name, rows.iter().map(|r| get(r).to_string()).collect())
}

/// The columns that say which token matrix a row is about: model, condition, group, layer.
fn key_columns<T>(rows: &[T], key: impl Fn(&T) -> (&str, &str, &str, usize)) -> Vec<Column> {
    vec![
        text("model", rows, |r| key(r).0),
        text("condition", rows, |r| key(r).1),
        text("group", rows, |r| key(r).2),
        Column::Int("layer", rows.iter().map(|r| key(r).3 as i64).collect()),
    ]
}

pub fn write_ranks(path: &Path, rows: &[RankRow]) -> Result<()> {
    let mut columns = key_columns(rows, |r| (&r.model, &r.condition, &r.group, r.layer));
    columns.extend([
        text("estimator", rows, |r| &r.estimator),
        Column::Bool("centred", rows.iter().map(|r| r.centred).collect()),
        Column::Float("value", rows.iter().map(|r| r.value).collect()),
        Column::Int("n_tokens", rows.iter().map(|r| r.n_tokens as i64).collect()),
    ]);
    write_table(path, "ranks", columns)
}

pub fn write_spectra(path: &Path, rows: &[SpectrumRow]) -> Result<()> {
    let mut columns = key_columns(rows, |r| (&r.model, &r.condition, &r.group, r.layer));
    columns.extend([
        Column::Bool("centred", rows.iter().map(|r| r.centred).collect()),
        Column::Int("index", rows.iter().map(|r| r.index as i64).collect()),
        Column::Float("eigenvalue", rows.iter().map(|r| r.eigenvalue).collect()),
    ]);
    write_table(path, "spectra", columns)
}

fn write_table(path: &Path, name: &str, columns: Vec<Column>) -> Result<()> {
    let context = || format!("writing {}", path.display());
    let fields: String = columns.iter().map(Column::schema_field).collect::<Vec<_>>().join(" ");
    let schema = Arc::new(parse_message_type(&format!("message {name} {{ {fields} }}")).with_context(context)?);
    let file = std::fs::File::create(path).with_context(context)?;
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build())).with_context(context)?;
    let mut row_group = writer.next_row_group().with_context(context)?;
    for column in &columns {
        let mut out = row_group.next_column().with_context(context)?.context("parquet schema has fewer columns than the table")?;
        match column {
            Column::Text(_, values) => {
                let values: Vec<ByteArray> = values.iter().map(|v| ByteArray::from(v.as_bytes().to_vec())).collect();
                out.typed::<ByteArrayType>().write_batch(&values, None, None)
            }
            Column::Int(_, values) => out.typed::<Int64Type>().write_batch(values, None, None),
            Column::Float(_, values) => out.typed::<DoubleType>().write_batch(values, None, None),
            Column::Bool(_, values) => out.typed::<BoolType>().write_batch(values, None, None),
        }
        .with_context(context)?;
        out.close().with_context(context)?;
    }
    row_group.close().with_context(context)?;
    writer.close().with_context(context)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    #[test]
    fn ranks_read_back_with_the_parquet_reader() {
        let rows = vec![
            RankRow {
                model: "MLM".into(),
                condition: "masked".into(),
                group: "mask".into(),
                layer: 3,
                estimator: "var@0.9".into(),
                centred: false,
                value: 41.0,
                n_tokens: 1200,
            },
            RankRow {
                model: "MAE-LM".into(),
                condition: "clean".into(),
                group: "real".into(),
                layer: 0,
                estimator: "entropy".into(),
                centred: true,
                value: 57.25,
                n_tokens: 9,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ranks.parquet");
        write_ranks(&path, &rows).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let names: Vec<String> = reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name().to_string()).collect();
        assert_eq!(names, ["model", "condition", "group", "layer", "estimator", "centred", "value", "n_tokens"]);
        let back: Vec<RankRow> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                RankRow {
                    model: row.get_string(0).unwrap().clone(),
                    condition: row.get_string(1).unwrap().clone(),
                    group: row.get_string(2).unwrap().clone(),
                    layer: row.get_long(3).unwrap() as usize,
                    estimator: row.get_string(4).unwrap().clone(),
                    centred: row.get_bool(5).unwrap(),
                    value: row.get_double(6).unwrap(),
                    n_tokens: row.get_long(7).unwrap() as u64,
                }
            })
            .collect();
        assert_eq!(back, rows);
    }

    #[test]
    fn spectra_have_one_row_per_eigenvalue() {
        let rows: Vec<SpectrumRow> = (0..5)
            .map(|i| SpectrumRow {
                model: "MLM".into(),
                condition: "clean".into(),
                group: "all".into(),
                layer: 1,
                centred: false,
                index: i,
                eigenvalue: 10.0 / (i + 1) as f64,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spectra.parquet");
        write_spectra(&path, &rows).unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 5);
        let eigenvalues: Vec<f64> = reader.get_row_iter(None).unwrap().map(|r| r.unwrap().get_double(6).unwrap()).collect();
        assert_eq!(eigenvalues, rows.iter().map(|r| r.eigenvalue).collect::<Vec<_>>());
    }
}
