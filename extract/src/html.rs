pub(crate) fn extract(
    _b: &[u8],
    _l: &crate::ExtractLimits,
    f: &'static str,
) -> Result<crate::ExtractedText, crate::ExtractError> {
    Err(crate::ExtractError::malformed(f, "todo"))
}
