//! The secagg home of a Fed-BioMed v4 component, found from what Fed-BioMed's code passes its
//! managers (`CertificateManager(environ['DB_PATH'])` and the like): the component's TinyDB file
//! `<root>/var/db_<id>.json`.
//!
//! The home lives beside that file: `<root>/var/db_<id>.secagg/` ([`home_path_for`]). On first
//! use it is created by adopting the component's own identity, as `secagg init --from-fedbiomed`
//! does: the `etc/*.ini` of `<root>` whose `[default] id` is `<id>` gives the certificate, key and
//! MP-SPDZ endpoint; then the `Certificates` table of the TinyDB file (if it exists) is imported,
//! every entry validated, all or nothing. The home is built in a temporary directory beside it
//! and renamed into place only when complete, so that a failure leaves nothing and two processes
//! adopting at once end with the one home the first rename made.
//!
//! A path that already is a directory is taken as a secagg home (what the adapter took before),
//! and must hold an identity.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::{import_tinydb_with, ImportOptions, ImportReport};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::identity::{self, Adoption, FedbiomedComponent, ImportOptions as AdoptOptions};

/// What opening a component's home did.
pub struct ComponentHome {
    /// The home.
    pub home: Home,
    /// When it was created now: the adoption and the import of the TinyDB certificates.
    pub created: Option<(Adoption, Option<ImportReport>)>,
}

/// The secagg home of the component whose TinyDB file is `db_path`: `<dir>/<stem>.secagg`.
pub fn home_path_for(db_path: &Path) -> PathBuf {
    let stem = db_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".to_owned());
    db_path.with_file_name(format!("{stem}.secagg"))
}

/// Opens the home for `db_path` (see the module documentation), adopting the component's
/// identity on first use.
pub fn open(db_path: &Path, now: OffsetDateTime) -> Result<ComponentHome> {
    if db_path.is_dir() {
        let home = Home::new(db_path);
        identity::load(&home)?;
        return Ok(ComponentHome {
            home,
            created: None,
        });
    }
    let path = home_path_for(db_path);
    let home = Home::new(&path);
    if path.exists() {
        identity::load(&home).map_err(|e| {
            e.context(format!(
                "in `{}`, the secagg home of Fed-BioMed database `{}`",
                path.display(),
                db_path.display()
            ))
        })?;
        return Ok(ComponentHome {
            home,
            created: None,
        });
    }
    let created = adopt_into(db_path, &path, now)?;
    Ok(ComponentHome {
        home,
        created: Some(created),
    })
}

/// The component id that the TinyDB file name `db_<id>.json` carries.
fn component_id(db_path: &Path) -> Result<String> {
    db_path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("db_"))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::invalid(format!(
                "cannot tell which Fed-BioMed component `{}` belongs to: its database is named var/db_<id>.json",
                db_path.display()
            ))
            .with_hint("give the component's DB_PATH, or the path of an existing secagg home")
        })
}

/// The configuration of component `id` among `<root>/etc/*.ini`, `<root>` being the parent of
/// the directory of `db_path`.
fn find_component(db_path: &Path, id: &str) -> Result<FedbiomedComponent> {
    let var = db_path.parent().unwrap_or(Path::new("."));
    let root = var.parent().unwrap_or(Path::new("."));
    let etc = root.join("etc");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&etc)
        .map_err(|e| {
            Error::io_path("listing", &etc, e).context(format!(
                "looking for the configuration of Fed-BioMed component {id}"
            ))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ini"))
        .collect();
    configs.sort();
    let mut unreadable = Vec::new();
    for config in configs {
        match FedbiomedComponent::read(&config) {
            Ok(c) if c.id == id => return Ok(c),
            Ok(_) => {}
            Err(e) => unreadable.push(format!("{}: {}", config.display(), e)),
        }
    }
    Err(Error::not_found(format!(
        "no configuration in `{}` is that of Fed-BioMed component {id}{}",
        etc.display(),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(" (not read: {})", unreadable.join("; "))
        }
    ))
    .with_hint(format!(
        "create the home yourself: secagg --home {} init --from-fedbiomed CONFIG_FILE",
        home_path_for(db_path).display()
    )))
}

/// Adopts the component of `db_path` into a new home at `path`.
fn adopt_into(
    db_path: &Path,
    path: &Path,
    now: OffsetDateTime,
) -> Result<(Adoption, Option<ImportReport>)> {
    let id = component_id(db_path)?;
    let component = find_component(db_path, &id)?;
    let partial = path.with_file_name(format!(
        ".{}.partial-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    let staged = Home::new(&partial);
    let built = build(&staged, &component, db_path, now);
    let outcome = built.and_then(|created| {
        std::fs::rename(&partial, path)
            .map(|()| created)
            .map_err(|e| Error::io_path("moving the new secagg home to", path, e))
    });
    let _ = std::fs::remove_dir_all(&partial);
    let e = match outcome {
        Ok(created) => return Ok(created),
        Err(e) => e,
    };
    // Another process adopted the component at the same moment: its home is the home.
    match identity::load(&Home::new(path)) {
        Ok(identity) => Ok((
            Adoption {
                identity,
                archived_to: None,
                warnings: Vec::new(),
            },
            None,
        )),
        Err(_) => Err(e.context(format!(
            "while creating the secagg home `{}` of Fed-BioMed component {id} (from `{}`)",
            path.display(),
            component.config_file.display()
        ))),
    }
}

/// The identity of `component` and the certificates of `db_path`, in `home`.
fn build(
    home: &Home,
    component: &FedbiomedComponent,
    db_path: &Path,
    now: OffsetDateTime,
) -> Result<(Adoption, Option<ImportReport>)> {
    let adoption = identity::import(
        home,
        &AdoptOptions {
            id: component.id.clone(),
            key: component.key.clone(),
            cert: component.cert.clone(),
            host: component.host.clone(),
            port: component.port,
            force: false,
            allow_custom_id: true,
        },
        now,
    )?;
    // TinyDB creates its file on first write, and takes an empty file for an empty database.
    let has_documents = std::fs::metadata(db_path).is_ok_and(|m| m.is_file() && m.len() > 0);
    let report = if has_documents {
        let options = ImportOptions {
            allow_custom_ids: true,
            ..ImportOptions::default()
        };
        Some(import_tinydb_with(home, db_path, &options, now)?)
    } else {
        None
    };
    Ok((adoption, report))
}
