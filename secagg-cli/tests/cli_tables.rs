//! Tables on a terminal fit its width (issue 23, item 6: they were 150–300 columns wide whatever
//! the terminal); `--wide` and output to a pipe keep one line per row. The terminal is a real
//! pseudo-terminal of the given width (`script` from util-linux, `stty cols`).

use std::process::Command;

#[path = "../../tests/support/mod.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_secagg");

/// The widest line (in characters) of `secagg --home HOME args…` on a terminal of `cols` columns.
fn widest_on_terminal(home: &str, args: &str, cols: u16) -> usize {
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("stty cols {cols}; {BIN} --home {home} {args}"),
            "/dev/null",
        ])
        .output()
        .expect("script (util-linux) runs the command on a pseudo-terminal");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('\r').chars().count())
        .max()
        .unwrap_or(0)
}

#[test]
fn tables_fit_the_terminal_and_wide_keeps_rows_on_one_line() {
    let (homes, root) = support::kept_demo(2);
    let home = homes[0].clone();
    for args in ["certificate list", "context list"] {
        for cols in [100, 120] {
            let fitted = widest_on_terminal(&home, args, cols);
            assert!(
                fitted <= cols as usize,
                "{args}: {fitted} columns on a {cols}-column terminal"
            );
        }
        let wide = widest_on_terminal(&home, &format!("{args} --wide"), 120);
        assert!(wide > 120, "{args} --wide: {wide} columns");
        // To a pipe: one line per row, as before (scripts read it).
        let piped = Command::new(BIN)
            .args(["--home", &home])
            .args(args.split(' '))
            .output()
            .unwrap();
        let widest_piped = String::from_utf8_lossy(&piped.stdout)
            .lines()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        assert!(widest_piped > 120, "{args} piped: {widest_piped}");
    }
    // 80 columns: the context list fits; the certificate list (ten columns, a fingerprint
    // header of 11 characters) comes within a few columns of it.
    assert!(widest_on_terminal(&home, "context list", 80) <= 80);
    assert!(widest_on_terminal(&home, "certificate list", 80) <= 92);
    std::fs::remove_dir_all(root).unwrap();
}
