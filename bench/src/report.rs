//! The result table: printed as text, written as Markdown.

use std::fmt::Write as _;

/// Whether a figure met its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Goal met.
    Pass,
    /// Goal missed.
    Fail,
    /// Could not be measured in this run.
    NotMeasured,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NotMeasured => "not measured",
        }
    }

    /// Pass when `ok`.
    pub fn of(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }
}

/// A ratio measured against its goal (`>= goal`), to three decimals, or to as many more as
/// it takes for the printed value to fall on the same side of the goal as the measured one: a
/// figure at 0.4996x fails a 0.50x goal, and reads "0.4996x", not "0.500x".
pub fn ratio(value: f64, goal: f64) -> String {
    let mut text = String::new();
    for decimals in 3..=6 {
        text = format!("{value:.decimals$}x");
        let shown: f64 = text.trim_end_matches('x').parse().unwrap_or(value);
        if (shown >= goal) == (value >= goal) {
            break;
        }
    }
    text
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Figure number (`2`, `2b`, ...).
    pub figure: String,
    /// What is measured.
    pub what: String,
    /// The measured value, with its unit.
    pub measured: String,
    /// The goal.
    pub goal: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Baselines and absolute numbers behind the value.
    pub detail: String,
}

impl Row {
    /// A row.
    pub fn new(
        figure: &str,
        what: &str,
        measured: String,
        goal: &str,
        verdict: Verdict,
        detail: String,
    ) -> Self {
        Row {
            figure: figure.to_owned(),
            what: what.to_owned(),
            measured,
            goal: goal.to_owned(),
            verdict,
            detail,
        }
    }

    /// A figure that could not be measured, and why.
    pub fn not_measured(figure: &str, what: &str, goal: &str, why: String) -> Self {
        Row::new(
            figure,
            what,
            "—".to_owned(),
            goal,
            Verdict::NotMeasured,
            why,
        )
    }
}

/// The rows as an aligned text table.
pub fn text(rows: &[Row]) -> String {
    let head = ["fig", "figure", "measured", "goal", "result"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.as_str(),
                r.what.as_str(),
                r.measured.as_str(),
                r.goal.as_str(),
                r.verdict.as_str(),
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: [&str; 5]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(width).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        s.trim_end().to_owned()
    };
    let mut out = line(head);
    out.push('\n');
    out.push_str(&"-".repeat(width.iter().sum::<usize>() + 8));
    out.push('\n');
    for c in cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    out.push('\n');
    for r in rows {
        if !r.detail.is_empty() {
            let _ = writeln!(out, "  [{}] {}", r.figure, r.detail);
        }
    }
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The rows as a Markdown table followed by the details.
pub fn markdown(rows: &[Row]) -> String {
    let mut out =
        String::from("| # | figure | measured | goal | result |\n|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            md_cell(&r.figure),
            md_cell(&r.what),
            md_cell(&r.measured),
            md_cell(&r.goal),
            r.verdict.as_str()
        );
    }
    out.push_str("\nDetails (baselines and absolute numbers of the same run):\n\n");
    for r in rows {
        if !r.detail.is_empty() {
            let _ = writeln!(out, "- **{}**: {}", md_cell(&r.figure), md_cell(&r.detail));
        }
    }
    out
}

#[cfg(test)]
mod ratio_tests {
    use super::ratio;

    #[test]
    fn a_ratio_never_reads_as_meeting_a_goal_it_missed() {
        assert_eq!(ratio(0.4872, 0.5), "0.487x");
        assert_eq!(ratio(0.5013, 0.5), "0.501x");
        assert_eq!(ratio(0.49962, 0.5), "0.4996x");
        assert_eq!(ratio(0.8999, 0.9), "0.8999x");
        assert_eq!(ratio(0.9, 0.9), "0.900x");
    }
}
