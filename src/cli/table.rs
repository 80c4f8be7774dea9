//! Plain-text tables for command output, columns padded like kubectl's.

/// Renders a header row and data rows, three spaces between columns.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn pads_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ];
        assert_eq!(super::render(&rows), "A     BB\nccc   d");
    }
}
