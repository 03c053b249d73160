//! The progress bar of bench and soak (hidden with `--no-progress`, for scripts).

pub fn bar(total: usize, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} requests {wide_bar} {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
