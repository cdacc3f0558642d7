//! What an uploaded file is: its type from its own bytes, an image's size
//! and a small re-encoded copy made within limits, and the names and
//! headers it is stored and served under. No I/O: the upload path hands
//! in bytes and gets answers.
//!
//! The type always comes from the content: a client's `Content-Type` or
//! file extension is never believed, since serving a file under a type
//! the client chose is how an upload becomes a script on our origin.

// Used by the upload path (issue 21), wired next.
#![cfg_attr(not(test), allow(dead_code))]

use std::io::Cursor;
use std::num::NonZeroUsize;
use std::sync::LazyLock;
use std::time::Duration;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::Semaphore;

/// The first bytes the server keeps of every upload to sniff it and to
/// read an image's size without the rest.
///
/// infer needs a few hundred bytes at most, a PNG's IHDR is at byte 16, GIF
/// and WebP headers are in the first 30. JPEG is the one that needs room:
/// its frame header (SOF) comes after the APPn segments, and cameras write
/// an Exif segment with an embedded preview of up to 64 KiB (a segment's
/// limit) followed by XMP and ICC segments. 128 KiB holds a full Exif
/// segment and another nearly full one; per upload in flight it is cheap.
pub(crate) const SNIFF_BYTES: usize = 128 * 1024;

const OCTET_STREAM: &str = "application/octet-stream";
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// The content type of a file from its first bytes, never from the client.
///
/// infer's answer when it has one (it says `text/html` or `text/xml` for
/// markup, which is the honest type: [`content_disposition`] is what keeps
/// such files from rendering on our origin); otherwise UTF-8 text without
/// NUL is `text/plain`, anything else `application/octet-stream`.
pub(crate) fn sniff(head: &[u8]) -> String {
    if head.is_empty() {
        return OCTET_STREAM.to_owned();
    }
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    if is_utf8_text(head) {
        TEXT_PLAIN.to_owned()
    } else {
        OCTET_STREAM.to_owned()
    }
}

fn is_utf8_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        // The head is a cut of a longer file: a character split by the cut
        // (at most 3 bytes of it) is not a sign of binary data.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

/// The media type without parameters, lower-cased.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The raster formats we decode, by the type [`sniff`] gives them.
fn image_format(content_type: &str) -> Option<ImageFormat> {
    match essence(content_type).as_str() {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Types we decode to make a thumbnail: PNG, JPEG, GIF, WebP.
pub(crate) fn is_image(content_type: &str) -> bool {
    image_format(content_type).is_some()
}

/// Types a browser may show inline: the raster images of [`is_image`],
/// audio and video, none of which can run script. Everything else (HTML,
/// SVG, XML, PDF, text, ...) is served as a download, since rendered on our
/// origin it could read a user's session.
pub(crate) fn inline_safe(content_type: &str) -> bool {
    let essence = essence(content_type);
    is_image(&essence) || essence.starts_with("audio/") || essence.starts_with("video/")
}

/// The decodable format of `bytes`, from their magic numbers.
fn guess_format(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes).ok()? {
        format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) => {
            Some(format)
        }
        _ => None,
    }
}

/// A decoder positioned after the header: nothing of the pixels is read,
/// and `max_alloc` bounds what the header itself may make it allocate
/// (compressed PNG metadata, for one).
fn header_decoder(
    bytes: &[u8],
    max_alloc: u64,
) -> Option<Result<impl ImageDecoder + '_, image::ImageError>> {
    let format = guess_format(bytes)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // No width/height limits yet: we want to read the size of a too-large
    // image to say so, and refuse it ourselves.
    let mut limits = image::Limits::no_limits();
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    Some(reader.into_decoder())
}

/// Width and height as displayed: an Exif rotation by a quarter turn swaps
/// them. Unreadable orientation data is ignored, as browsers do.
fn oriented_size(decoder: &mut impl ImageDecoder) -> ((u32, u32), Orientation) {
    let (width, height) = decoder.dimensions();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let size = match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    (size, orientation)
}

/// Width and height as displayed, from the header alone (no pixel is
/// decoded), for images too big to keep whole for [`inspect_image`]. `None`
/// if `head` is not a PNG, JPEG, GIF or WebP, or its header is not all in
/// `head`.
pub(crate) fn dimensions(head: &[u8]) -> Option<(u32, u32)> {
    let mut decoder = header_decoder(head, ImageLimits::default().max_alloc)?.ok()?;
    Some(oriented_size(&mut decoder).0)
}

/// What [`inspect_image`] may spend on one image.
#[derive(Debug, Clone)]
pub(crate) struct ImageLimits {
    /// Width × height above which an image is not decoded: the memory a
    /// decode takes is 3–8 bytes a pixel (50 M pixels: 150–400 MB).
    pub(crate) max_pixels: u64,
    /// The longest side decoded, whatever the area: a 1 × 10⁹ strip is
    /// no picture.
    pub(crate) max_side: u32,
    /// The decoder's allocation cap (image::Limits::max_alloc), output
    /// buffer included.
    pub(crate) max_alloc: u64,
    /// The box a thumbnail fits in.
    pub(crate) thumb_side: u32,
    /// How long [`inspect_image_async`] waits for a decode.
    pub(crate) timeout: Duration,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_pixels: 64_000_000,
            max_side: 20_000,
            max_alloc: 512 * 1024 * 1024,
            thumb_side: 320,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A small re-encoded copy of an image.
#[derive(Debug, Clone)]
pub(crate) struct Thumbnail {
    pub(crate) bytes: Vec<u8>,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// `image/jpeg`, or `image/png` when some pixel is transparent.
    pub(crate) content_type: &'static str,
}

/// What [`inspect_image`] found.
#[derive(Debug, Clone)]
pub(crate) struct ImageInfo {
    /// As displayed (Exif orientation applied).
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// [`inspect_image`] always makes one; `None` is for a record built
    /// from [`dimensions`] alone, for an image too big to decode.
    pub(crate) thumbnail: Option<Thumbnail>,
}

/// Why an image was not inspected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    /// Larger than the limits allow: a decompression bomb or just too big.
    #[error("image of {width}×{height} is larger than allowed")]
    TooLarge { width: u32, height: u32 },
    /// Not decodable as the type it sniffed as.
    #[error("invalid image: {0}")]
    Invalid(String),
    /// Decoding took longer than the limit.
    #[error("image decoding timed out")]
    Timeout,
}

/// Decodes `bytes` (sniffed as an image) within `limits` and makes its
/// thumbnail.
///
/// The size is read from the header and checked before any pixel is
/// decoded, so a bomb (a small file claiming billions of pixels) costs a
/// header read. The decoder then runs under `image::Limits` as well. The
/// thumbnail fits in `thumb_side` × `thumb_side`, upright, and is made even
/// for a small image, so that clients always have a small copy that went
/// through our encoder rather than the uploader's bytes. An animation gives
/// its first frame.
pub(crate) fn inspect_image(bytes: &[u8], limits: &ImageLimits) -> Result<ImageInfo, ImageError> {
    let mut decoder = header_decoder(bytes, limits.max_alloc)
        .ok_or_else(|| ImageError::Invalid("not a PNG, JPEG, GIF or WebP".to_owned()))?
        .map_err(invalid)?;
    let (stored_width, stored_height) = decoder.dimensions();
    let ((width, height), orientation) = oriented_size(&mut decoder);
    if width == 0 || height == 0 {
        return Err(ImageError::Invalid("an image without pixels".to_owned()));
    }
    let too_large = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => ImageError::TooLarge { width, height },
        e => invalid(e),
    };
    if u64::from(width) * u64::from(height) > limits.max_pixels
        || width.max(height) > limits.max_side
        // `from_decoder` allocates the output before the decoder applies
        // any limit, so its size is checked here (as ImageReader::decode
        // does).
        || decoder.total_bytes() > limits.max_alloc
    {
        return Err(ImageError::TooLarge { width, height });
    }

    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    decoder.set_limits(decoder_limits).map_err(too_large)?;
    let image = DynamicImage::from_decoder(decoder).map_err(too_large)?;

    // Scaled before it is turned: rotating the full image would copy it.
    let (thumb_width, thumb_height) = fit(stored_width, stored_height, limits.thumb_side);
    let mut small = image.thumbnail_exact(thumb_width, thumb_height);
    drop(image);
    small.apply_orientation(orientation);
    let thumbnail = encode_thumbnail(&small)?;
    Ok(ImageInfo {
        width,
        height,
        thumbnail: Some(thumbnail),
    })
}

fn invalid(e: image::ImageError) -> ImageError {
    ImageError::Invalid(e.to_string())
}

/// The size of `width` × `height` scaled to fit in `side` × `side`, never
/// up, never to zero.
fn fit(width: u32, height: u32, side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= side {
        return (width, height);
    }
    let scale = |n: u32| {
        let scaled = (u64::from(n) * u64::from(side) + u64::from(long) / 2) / u64::from(long);
        u32::try_from(scaled).unwrap_or(side).max(1)
    };
    (scale(width), scale(height))
}

/// JPEG at quality 80 for opaque pictures (a tenth of a PNG's size for a
/// photo); PNG only when some pixel is transparent, which JPEG cannot say.
fn encode_thumbnail(image: &DynamicImage) -> Result<Thumbnail, ImageError> {
    let (width, height) = (image.width(), image.height());
    let transparent = image
        .color()
        .has_alpha()
        .then(|| image.to_rgba8())
        .filter(|rgba| rgba.pixels().any(|p| p.0[3] < u8::MAX));
    let mut bytes = Vec::new();
    let content_type = if let Some(rgba) = transparent {
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(&rgba, width, height, image::ExtendedColorType::Rgba8)
            .map_err(invalid)?;
        "image/png"
    } else {
        let rgb = image.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
            .write_image(&rgb, width, height, image::ExtendedColorType::Rgb8)
            .map_err(invalid)?;
        "image/jpeg"
    };
    Ok(Thumbnail {
        bytes,
        width,
        height,
        content_type,
    })
}

/// One decode per core at a time: a burst of uploads must not take every
/// blocking thread, nor the memory all their pixels would need at once.
static DECODERS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
});

/// [`inspect_image`] off the async runtime, at most one decode per core at
/// once, answering [`ImageError::Timeout`] after `limits.timeout`.
///
/// The timeout counts the decode, not the wait for a free core: under load
/// an ordinary photo must not be refused for others' work. A timed-out
/// decode runs on to its end on its blocking thread (a thread cannot be
/// stopped), keeping its core's permit; the pixel limit bounds that work.
///
/// Cancel safe: dropping the future before the decode starts releases its
/// place; after, the decode finishes unobserved.
pub(crate) async fn inspect_image_async(
    bytes: bytes::Bytes,
    limits: ImageLimits,
) -> Result<ImageInfo, ImageError> {
    let permit = DECODERS
        .acquire()
        .await
        .map_err(|_| ImageError::Invalid("decoding is shut down".to_owned()))?;
    let timeout = limits.timeout;
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        inspect_image(&bytes, &limits)
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ImageError::Invalid(format!("decoder failed: {join}"))),
        Err(_) => Err(ImageError::Timeout),
    }
}

const MAX_NAME_BYTES: usize = 255;
/// An extension longer than this is not kept whole when a name is cut: it
/// is more likely part of the name than a type.
const MAX_EXTENSION_BYTES: usize = 16;

/// A file name a client gave, made safe to store and to show.
///
/// The last path component only (`/` and `\`); control characters, double
/// quotes and Unicode bidirectional controls removed (the last can make
/// `invoice`, U+202E, `fdp.exe` show as `invoiceexe.pdf`); trimmed; at most
/// 255 bytes, cut at a character boundary, keeping a short extension.
/// Apostrophes stay: `Bob's notes.txt` is a real name, and
/// [`content_disposition`] escapes what it must. Never empty, `.` or `..`
/// (those become `file`).
pub(crate) fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|&c| !c.is_control() && c != '"' && !is_bidi_control(c))
        .collect();
    let mut name = cleaned.trim().to_owned();
    if name.len() > MAX_NAME_BYTES {
        name = shorten(&name);
    }
    if name.is_empty() || name == "." || name == ".." {
        return "file".to_owned();
    }
    name
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

fn shorten(name: &str) -> String {
    let extension = name
        .rfind('.')
        .filter(|&dot| dot > 0 && name.len() - dot <= MAX_EXTENSION_BYTES + 1)
        .map_or("", |dot| &name[dot..]);
    let stem = &name[..name.len() - extension.len()];
    let stem = cut(stem, MAX_NAME_BYTES - extension.len()).trim_end();
    format!("{stem}{extension}")
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// RFC 5987 `attr-char`: what `filename*` may carry unencoded.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The `Content-Disposition` value a file is served with: `inline` only if
/// [`inline_safe`], else `attachment`; the name both as an ASCII `filename`
/// for old clients and as RFC 6266's `filename*=UTF-8''…`, which current
/// browsers prefer. In the fallback, non-ASCII, `"` and `\` become `_`, and
/// so does `%`, which some clients would percent-decode (RFC 6266, app. D).
pub(crate) fn content_disposition(name: &str, content_type: &str) -> String {
    let name = safe_file_name(name);
    let disposition = if inline_safe(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '%') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(&name, ATTR_CHAR_ESCAPES);
    format!("{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests;
