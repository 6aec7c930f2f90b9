//! Rows on a terminal: aligned columns, CSV or JSON.

use std::io::{self, Write};

use clap::ValueEnum;
use slavealloc_domain::schema::{Row, Value};

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// A JSON array of row objects, every column included.
    Json,
    /// CSV with a header row.
    Csv,
}

/// A value as a cell: NULL is empty.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Text(s)) => s.clone(),
    }
}

/// Writes `rows` in `format`; table and CSV show `columns` in that order.
///
/// # Errors
/// The writer's.
pub fn write_rows(w: &mut dyn Write, format: Format, columns: &[&str], rows: &[Row]) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *w, rows)?;
            writeln!(w)
        }
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(w);
            csv.write_record(columns)?;
            for row in rows {
                csv.write_record(columns.iter().map(|c| cell(row.get(*c))))?;
            }
            csv.flush()
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| columns.iter().map(|c| one_line(&cell(r.get(*c)))).collect())
                .collect();
            let header: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
            write_table(w, &header, &cells)
        }
    }
}

/// Aligned columns, two spaces apart, no trailing blanks.
pub fn write_table(w: &mut dyn Write, header: &[String], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, c) in widths.iter_mut().zip(row) {
            *width = (*width).max(c.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, width)| format!("{c:<width$}"))
            .collect();
        writeln!(w, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// Notes may hold line breaks; a table row may not.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn tables_align_and_csv_quotes() {
        let rows = [
            row(&[("name", Value::Text("a".into())), ("notes", Value::Null)]),
            row(&[
                ("name", Value::Text("longer".into())),
                ("notes", Value::Text("x, \"y\"\nz".into())),
            ]),
        ];
        let mut out = Vec::new();
        write_rows(&mut out, Format::Table, &["name", "notes"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "name    notes\na\nlonger  x, \"y\" z\n"
        );
        let mut out = Vec::new();
        write_rows(&mut out, Format::Csv, &["name", "notes"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "name,notes\na,\nlonger,\"x, \"\"y\"\"\nz\"\n"
        );
    }
}
