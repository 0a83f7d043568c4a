//! "Did you mean ...?" for misspelt fields, names and values.

/// The candidate closest to `input`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a, I, S>(input: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str> + 'a,
{
    let limit = (input.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| {
            let c = c.as_ref().to_string();
            let distance = strsim::damerau_levenshtein(&input.to_lowercase(), &c.to_lowercase());
            (distance, c)
        })
        .filter(|(d, c)| *d <= limit && c != input)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_letter_typo_finds_the_field() {
        assert_eq!(
            did_you_mean("shedule", ["schedule", "audience"]).as_deref(),
            Some("schedule")
        );
    }

    #[test]
    fn nothing_close_suggests_nothing() {
        assert_eq!(did_you_mean("colour", ["schedule", "audience"]), None);
    }
}
