//! Mapping templates from a directory: loaded at start, reloaded on demand (SIGHUP in the binary,
//! `POST /api/v1/mapping/reload`). A reload that finds any broken file changes nothing and says
//! which file and field is wrong; the templates in force stay.

use std::path::Path;

use galen_mapping::{Template, TemplateSet};

use crate::App;

/// Reads every `*.toml` and `*.json` file of `directory` as a template.
pub fn load_templates(directory: &Path) -> Result<TemplateSet, String> {
    let entries = std::fs::read_dir(directory).map_err(|error| {
        format!(
            "cannot read template directory {}: {error}",
            directory.display()
        )
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|extension| extension.to_str()),
                    Some("toml" | "json")
                )
        })
        .collect();
    paths.sort();
    let mut templates = Vec::with_capacity(paths.len());
    for path in paths {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read template {shown}: {error}"))?;
        let template = if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            Template::from_json(&text)
        } else {
            Template::from_toml(&text)
        }
        .map_err(|error| format!("template {shown}: {error}"))?;
        templates.push((shown, template));
    }
    TemplateSet::new(templates).map_err(|error| error.to_string())
}

impl App {
    /// Loads the configured template directory and puts it in force. Returns how many templates
    /// are in force, or why nothing changed. Without a directory there is nothing to load.
    pub fn reload_templates(&self) -> Result<usize, String> {
        let Some(directory) = &self.0.config.template_dir else {
            return Ok(self.templates().len());
        };
        match load_templates(directory) {
            Ok(templates) => {
                let count = templates.len();
                self.set_templates(templates);
                Ok(count)
            }
            Err(message) => {
                tracing::warn!(%message, "mapping templates not reloaded");
                Err(message)
            }
        }
    }
}
